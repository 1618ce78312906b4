import { describe, expect, it } from 'vitest';
import { ConflictError, DeadlineExceededError, InvalidArgumentError, NotFoundError, ReadConflictError, UnavailableError, WriteConflictError } from '@loam/sdk';
import { classify } from './history.js';

describe('outcomes of SDK errors', () => {
  it('classifies SDK errors: conflicts and refusals are definite, unavailable and deadlines unknown', () => {
    expect(classify(new WriteConflictError('x')).outcome).toBe('fail');
    expect(classify(new ReadConflictError('x')).outcome).toBe('fail');
    expect(new ReadConflictError('x')).toBeInstanceOf(ConflictError);
    expect(classify(new NotFoundError('x')).outcome).toBe('fail');
    expect(classify(new InvalidArgumentError('x')).outcome).toBe('fail');
    expect(classify(new UnavailableError('x')).outcome).toBe('unknown');
    expect(classify(new DeadlineExceededError('x')).outcome).toBe('unknown');
    expect(classify(new Error('x')).outcome).toBe('unknown');
  });
});
