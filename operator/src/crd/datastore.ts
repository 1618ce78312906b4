/**
 * The DataStore CustomResourceDefinition: the one source of truth for the resource. The YAML in
 * crds/ is generated from it (`npm run gen:crds`; test/crd-drift.test.ts fails when the two
 * differ), the controller is to import it, and the TypeScript types beside it (types.ts) are kept
 * in sync with it by test.
 *
 * Defaults (filled in by the API server, so what a controller reads has them):
 * - nodes: 3, the issue's minimal DataStore (`nodes: 3`), so leaving it out gives the same.
 * - imagePullPolicy: IfNotPresent, as Kubernetes itself defaults a tagged image.
 * - storage.size: 10Gi per node (its log and segment cache).
 * - cacheSize: 64Mi, the same as `loam node --cache-size`'s default.
 * - etcd: left out, `{ managed: { members: 3 } }` (an etcd the operator runs, three members).
 * - s3.uploadInterval: 5s, the same as `loam node --upload-interval`'s default.
 * - deletionPolicy: Retain (deleting the resource never deletes data unless asked to).
 * - image: no schema default: the operator uses its own image (one image runs both `loam node`
 *   and `loam operator`), so node and operator versions match unless the user pins one.
 * - etcd.prefix and s3.prefix: no schema default (a default cannot name the object): the operator
 *   uses `/loam/<namespace>/<name>` and `<namespace>/<name>/`; both are fixed once in use.
 *
 * CEL rules, each explained at its rule: nodes >= 1; the name fits every child's name; etcd is
 * either external (endpoints) or managed, never both, and never switches after creation;
 * etcd.prefix is fixed at creation; s3.bucket and s3.prefix are fixed once a bucket is set;
 * storage.storageClassName is fixed and storage.size never shrinks; quantities are positive and
 * cacheSize is below the memory limit; uploadInterval >= 100ms; podTemplate.labels leave the
 * operator's own label keys alone.
 */
import type { CustomResourceDefinition, JSONSchemaProps, ValidationRule } from './apiextensions.js';
import { CONDITION_STATUSES, DATASTORE_CONDITION_TYPES, DATASTORE_PHASES, DELETION_POLICIES, PULL_POLICIES, type DeletionPolicy, type PullPolicy } from './types.js';

export const DATASTORE_GROUP = 'loam.dev';
export const DATASTORE_VERSION = 'v1alpha1';
export const DATASTORE_API_VERSION = `${DATASTORE_GROUP}/${DATASTORE_VERSION}` as const;
export const DATASTORE_KIND = 'DataStore';
export const DATASTORE_PLURAL = 'datastores';
export const DATASTORE_SINGULAR = 'datastore';
export const DATASTORE_SHORT_NAME = 'lds'; // not `ds`: that is DaemonSet's
export const DATASTORE_CRD_NAME = `${DATASTORE_PLURAL}.${DATASTORE_GROUP}`;

/** The schema's defaults, for a controller that meets an object stored before one of them existed. */
export const DATASTORE_DEFAULTS = {
  nodes: 3,
  imagePullPolicy: 'IfNotPresent' as PullPolicy,
  storageSize: '10Gi',
  cacheSize: '64Mi',
  etcdManagedMembers: 3,
  uploadInterval: '5s',
  deletionPolicy: 'Retain' as DeletionPolicy,
} as const;

/**
 * Label keys the operator puts on (and selects) the Pods it makes; `podTemplate.labels` may not
 * set them, or a user label could detach the Pods from their StatefulSet.
 */
export const OPERATOR_LABEL_KEYS = ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by'] as const;

/**
 * The longest DataStore name. Children are named after it (`<name>-etcd-peer` and the like), a
 * StatefulSet's name must leave room for the 11 characters its Pods' `controller-revision-hash`
 * label adds within 63, and a Service's name is a DNS-1035 label: 40 keeps all of them valid.
 */
export const DATASTORE_NAME_MAX = 40;

// ---------------------------------------------------------------------------------------------------------
// schema building blocks

const str = (description: string, extra: JSONSchemaProps = {}): JSONSchemaProps => ({ type: 'string', description, ...extra });
const bool = (description: string): JSONSchemaProps => ({ type: 'boolean', description });
const int = (description: string, format: 'int32' | 'int64', extra: JSONSchemaProps = {}): JSONSchemaProps => ({ type: 'integer', format, description, ...extra });
const rule = (r: string, message: string, extra: Omit<ValidationRule, 'rule' | 'message'> = {}): ValidationRule => ({ rule: r, message, ...extra });

/** A Kubernetes type kept as is (validated by whatever receives it: the Pod). */
const preserved = (description: string): JSONSchemaProps => ({ type: 'object', description, 'x-kubernetes-preserve-unknown-fields': true });
const preservedList = (description: string): JSONSchemaProps => ({
  type: 'array',
  description,
  'x-kubernetes-list-type': 'atomic',
  items: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
});
const stringMap = (description: string, extra: JSONSchemaProps = {}): JSONSchemaProps => ({ type: 'object', description, additionalProperties: { type: 'string' }, ...extra });

/** A resource.Quantity as corev1 writes it (an integer or a string), for container resources. */
const QUANTITY_PATTERN = '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$';
const resourceList = (description: string): JSONSchemaProps => ({
  type: 'object',
  description,
  // The bounds keep the CEL rule that reads limits.memory within the API server's cost budget.
  maxProperties: 32,
  additionalProperties: { 'x-kubernetes-int-or-string': true, anyOf: [{ type: 'integer' }, { type: 'string' }], maxLength: 64, pattern: QUANTITY_PATTERN },
});

/** One of Loam's own sizes: a quantity string, greater than zero. */
const size = (description: string, dflt: string): JSONSchemaProps =>
  str(description, {
    default: dflt,
    maxLength: 32,
    'x-kubernetes-validations': [rule("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))", 'must be a positive quantity, such as 64Mi or 10Gi')],
  });

/** The name of a Secret in the DataStore's namespace (a DNS subdomain). */
const secretName = (description: string): JSONSchemaProps =>
  str(description, { minLength: 1, maxLength: 253, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$' });

/** `has(self.a) && has(self.a.b)` for a path of optional fields. */
const hasPath = (root: string, path: string[]): string => path.map((_, i) => `has(${[root, ...path.slice(0, i + 1)].join('.')})`).join(' && ');

/**
 * A transition rule on the spec: the optional field at `path` keeps its presence and value across
 * updates (it can be neither added, changed nor removed). `when` limits it to updates whose old
 * object satisfies that condition.
 */
function fixedRule(path: string[], message: string, when?: string): ValidationRule {
  const field = (root: string) => [root, ...path].join('.');
  const fixed = `(${hasPath('self', path)}) == (${hasPath('oldSelf', path)}) && (!(${hasPath('self', path)}) || ${field('self')} == ${field('oldSelf')})`;
  return rule(when ? `!(${when}) || (${fixed})` : fixed, message, { fieldPath: `.${path.join('.')}` });
}

const condition: JSONSchemaProps = {
  type: 'object',
  description: 'A metav1.Condition.',
  required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'],
  properties: {
    type: str(`${DATASTORE_CONDITION_TYPES.join(', ')} (any CamelCase type is accepted).`, { maxLength: 316, pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$' }),
    status: str(CONDITION_STATUSES.join(', '), { enum: [...CONDITION_STATUSES] }),
    observedGeneration: int('The .metadata.generation the condition was set for.', 'int64', { minimum: 0 }),
    lastTransitionTime: str('When the status last changed.', { format: 'date-time' }),
    reason: str('Why, in CamelCase.', { minLength: 1, maxLength: 1024, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' }),
    message: str('Why, for people.', { maxLength: 32768 }),
  },
};

// ---------------------------------------------------------------------------------------------------------
// spec

const spec: JSONSchemaProps = {
  type: 'object',
  description: 'The DataStore the operator makes: its nodes, their storage, metadata store and S3 tier.',
  default: {},
  properties: {
    nodes: int('Storage nodes (the scale subresource\'s replicas). Scaling down drains the highest-numbered node first, one at a time.', 'int32', {
      default: DATASTORE_DEFAULTS.nodes,
      'x-kubernetes-validations': [rule('self >= 1', 'nodes must be at least 1')],
    }),
    image: str('The node image. Default: the operator\'s own image.', { minLength: 1, maxLength: 1024 }),
    imagePullPolicy: str(`${PULL_POLICIES.join(', ')}.`, { enum: [...PULL_POLICIES], default: DATASTORE_DEFAULTS.imagePullPolicy }),
    resources: {
      type: 'object',
      description: 'Compute resources of each node\'s container (corev1 ResourceRequirements: limits and requests).',
      properties: {
        limits: resourceList('The most each node may use: cpu, memory, ...'),
        requests: resourceList('What each node is scheduled with.'),
      },
    },
    storage: {
      type: 'object',
      description: 'The PersistentVolumeClaim of each node, for its log and segment cache.',
      default: {},
      properties: {
        size: size('Of each node\'s claim. It may grow (when the StorageClass allows expansion), never shrink.', DATASTORE_DEFAULTS.storageSize),
        storageClassName: str('The claims\' StorageClass. Default: the cluster\'s default class.', { minLength: 1, maxLength: 253 }),
      },
      'x-kubernetes-validations': [
        // A StatefulSet's volumeClaimTemplates cannot change: a new class would apply to no existing claim.
        fixedRule(['storageClassName'], 'storage.storageClassName cannot be added, changed or removed after creation'),
        // A PersistentVolumeClaim can be expanded, never shrunk.
        rule('!has(self.size) || !has(oldSelf.size) || !isQuantity(self.size) || !isQuantity(oldSelf.size) || !quantity(self.size).isLessThan(quantity(oldSelf.size))', 'storage.size cannot shrink (a volume can be expanded, never made smaller)', { fieldPath: '.size' }),
      ],
    },
    cacheSize: size('Each node\'s object cache memory bound (loam node --cache-size). Keep it well below the memory limit.', DATASTORE_DEFAULTS.cacheSize),
    etcd: {
      type: 'object',
      description: 'Where the DataStore\'s cluster metadata lives: an external etcd (endpoints), or one the operator runs for this DataStore (managed; the default).',
      default: { managed: {} },
      properties: {
        endpoints: {
          type: 'array',
          description: 'An external etcd: host:port or http(s)://host:port of its members.',
          minItems: 1,
          maxItems: 16,
          'x-kubernetes-list-type': 'atomic',
          items: { type: 'string', minLength: 1, maxLength: 512, pattern: '^[^,\\s]+$' },
        },
        credentialsSecret: secretName('A Secret in this namespace with the external etcd\'s username and password (keys: username, password).'),
        prefix: str('The key prefix of this DataStore. Default: /loam/<namespace>/<name>. Fixed at creation.', { minLength: 2, maxLength: 512, pattern: '^/[^\\s]*[^/\\s]$' }),
        managed: {
          type: 'object',
          description: 'An etcd the operator runs for this DataStore (when no endpoints are given).',
          properties: {
            members: int('Members of the managed etcd: 1, 3, 5 or 7.', 'int32', {
              default: DATASTORE_DEFAULTS.etcdManagedMembers,
              'x-kubernetes-validations': [rule('self >= 1 && self <= 7 && self % 2 == 1', 'etcd.managed.members must be 1, 3, 5 or 7 (an odd number keeps a majority through a partition)')],
            }),
          },
        },
      },
      'x-kubernetes-validations': [
        rule('!(has(self.endpoints) && has(self.managed))', 'etcd.endpoints and etcd.managed exclude each other: give endpoints for an external etcd, or managed for one the operator runs'),
        rule('!has(self.credentialsSecret) || has(self.endpoints)', 'etcd.credentialsSecret is for an external etcd (etcd.endpoints): the operator makes a managed etcd\'s credentials itself', { fieldPath: '.credentialsSecret' }),
      ],
    },
    s3: {
      type: 'object',
      description: 'The S3 tier: sealed log segments are uploaded to this bucket and a node whose volume is lost restores from it. Without it every block stays on the nodes\' volumes.',
      required: ['bucket'],
      properties: {
        endpoint: str('A non-AWS S3 endpoint, http(s)://host[:port] (path-style addressing). Default: AWS.', {
          maxLength: 1024,
          'x-kubernetes-validations': [rule("isURL(self) && url(self).getScheme() in ['http', 'https']", 's3.endpoint must be an http:// or https:// URL')],
        }),
        bucket: str('The bucket. Fixed once set.', { minLength: 3, maxLength: 63, pattern: '^[a-z0-9][a-z0-9.-]*[a-z0-9]$' }),
        prefix: str('The key prefix of this DataStore in the bucket. Default: <namespace>/<name>/. Fixed once the bucket is set.', { maxLength: 512 }),
        region: str('Default: the node\'s AWS configuration\'s, else us-east-1.', { minLength: 1, maxLength: 64 }),
        credentialsSecret: secretName('A Secret in this namespace with the S3 credentials (keys: accessKeyId, secretAccessKey, optionally sessionToken). Without it, the nodes\' ambient AWS credentials.'),
        uploadInterval: str('The longest a durable write lives only on a node\'s disk before it is uploaded: 500ms, 5s, 2m, 1h; at least 100ms.', {
          default: DATASTORE_DEFAULTS.uploadInterval,
          maxLength: 32,
          pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$',
          'x-kubernetes-validations': [rule("duration(self) >= duration('100ms')", 's3.uploadInterval must be at least 100ms')],
        }),
      },
    },
    podTemplate: {
      type: 'object',
      description: 'What the operator adds to each node Pod.',
      properties: {
        labels: stringMap('Labels added to each node Pod. The app.kubernetes.io/name, instance, component and managed-by keys are the operator\'s.', {
          maxProperties: 64,
          'x-kubernetes-validations': [rule(`self.all(k, !(k in [${OPERATOR_LABEL_KEYS.map((k) => `'${k}'`).join(', ')}]))`, `podTemplate.labels may not set ${OPERATOR_LABEL_KEYS.join(', ')}: the operator selects its Pods by them`)],
        }),
        annotations: stringMap('Annotations added to each node Pod.'),
        affinity: preserved('The Pods\' corev1 Affinity.'),
        tolerations: preservedList('The Pods\' corev1 Tolerations.'),
        topologySpreadConstraints: preservedList('The Pods\' corev1 TopologySpreadConstraints.'),
        nodeSelector: stringMap('The Pods\' nodeSelector.'),
        priorityClassName: str('The Pods\' PriorityClass.', { minLength: 1, maxLength: 253 }),
        securityContext: preserved('The Pods\' corev1 PodSecurityContext.'),
      },
    },
    deletionPolicy: str('What deleting the DataStore does to its etcd keys, S3 data and volumes: Retain keeps them, Delete removes them.', {
      enum: [...DELETION_POLICIES],
      default: DATASTORE_DEFAULTS.deletionPolicy,
    }),
  },
  'x-kubernetes-validations': [
    // etcd is always present (defaulted), but an object stored before that default is not.
    rule(
      '(has(self.etcd) && has(self.etcd.endpoints)) == (has(oldSelf.etcd) && has(oldSelf.etcd.endpoints))',
      'etcd cannot switch between an external etcd (endpoints) and a managed one after creation: the DataStore\'s metadata lives in it',
      { fieldPath: '.etcd' },
    ),
    // The operator derives a prefix when none is given: adding one later would move the metadata too.
    fixedRule(['etcd', 'prefix'], 'etcd.prefix cannot be added, changed or removed after creation: the DataStore\'s metadata lives under it'),
    rule('!has(oldSelf.s3) || (has(self.s3) && self.s3.bucket == oldSelf.s3.bucket)', 's3.bucket cannot be changed or removed once set: the DataStore\'s blocks live in it', { fieldPath: '.s3.bucket' }),
    fixedRule(['s3', 'prefix'], 's3.prefix cannot be added, changed or removed once s3.bucket is set: the DataStore\'s blocks live under it', 'has(oldSelf.s3) && has(self.s3)'),
    rule(
      // Written as all() over the limits: the API server's cost estimate of `limits.memory` (a
      // field of a map) is unbounded, of `limits[k]` within all() it is not.
      "!has(self.cacheSize) || !isQuantity(self.cacheSize) || !has(self.resources) || !has(self.resources.limits) || self.resources.limits.all(k, k != 'memory' || !isQuantity(string(self.resources.limits[k])) || quantity(self.cacheSize).isLessThan(quantity(string(self.resources.limits[k]))))",
      'cacheSize must be below resources.limits.memory: the object cache is only part of a node\'s memory',
      { fieldPath: '.cacheSize' },
    ),
  ],
};

// ---------------------------------------------------------------------------------------------------------
// status

const status: JSONSchemaProps = {
  type: 'object',
  description: 'What the operator last observed. Written through the status subresource.',
  properties: {
    phase: str('Pending (children being made, no node Ready yet), Running (every node Ready, nothing in progress), Scaling (nodes joining, or one draining), Upgrading (an image change rolling), Restoring (a node restoring from S3), Degraded (fewer nodes Ready than asked for, nothing in progress to fix it), Deleting.', { enum: [...DATASTORE_PHASES] }),
    conditions: {
      type: 'array',
      description: `${DATASTORE_CONDITION_TYPES.join(', ')}.`,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
      maxItems: 16,
      items: condition,
    },
    observedGeneration: int('The .metadata.generation the operator last acted on.', 'int64', { minimum: 0 }),
    readyNodes: int('Nodes that are Ready (the scale subresource\'s status replicas).', 'int32', { minimum: 0 }),
    nodes: {
      type: 'array',
      description: 'Each storage node, as the operator last saw it.',
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['name'],
      items: {
        type: 'object',
        required: ['name'],
        properties: {
          name: str('The Pod\'s name, which is the node\'s --node-name.', { minLength: 1, maxLength: 253 }),
          backend: int('The node number Loam gave it (the number in its oids).', 'int32', { minimum: 0 }),
          ready: bool('The node is up and serving.'),
          draining: bool('A drain of this node is in progress.'),
          objects: int('Objects stored on the node, replica copies included.', 'int64', { minimum: 0 }),
          uploadBacklogBytes: int('Bytes written on the node and not yet uploaded to S3.', 'int64', { minimum: 0 }),
          endpoint: str('The node\'s own client address, loam://host:port.'),
        },
      },
    },
    endpoint: str('The client URL the SDK connects to, loam://host:port.'),
    selector: str('The label selector of the node Pods (the scale subresource\'s).'),
  },
};

// ---------------------------------------------------------------------------------------------------------
// the definition

export const dataStoreCrd: CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: {
    name: DATASTORE_CRD_NAME,
    labels: { 'app.kubernetes.io/name': 'loam', 'app.kubernetes.io/part-of': 'loam' },
  },
  spec: {
    group: DATASTORE_GROUP,
    names: {
      plural: DATASTORE_PLURAL,
      singular: DATASTORE_SINGULAR,
      kind: DATASTORE_KIND,
      listKind: `${DATASTORE_KIND}List`,
      shortNames: [DATASTORE_SHORT_NAME],
      categories: ['loam'],
    },
    scope: 'Namespaced',
    versions: [
      {
        name: DATASTORE_VERSION,
        served: true,
        storage: true,
        schema: {
          openAPIV3Schema: {
            type: 'object',
            description: 'A Loam DataStore: a cluster of storage nodes the operator runs.',
            properties: {
              apiVersion: { type: 'string' },
              kind: { type: 'string' },
              metadata: { type: 'object' },
              spec,
              status,
            },
            'x-kubernetes-validations': [
              rule(
                `self.metadata.name.size() <= ${DATASTORE_NAME_MAX} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')`,
                // No fieldPath: it may not point into metadata. The message names the field.
                `metadata.name: a DataStore's name is a lowercase DNS label of at most ${DATASTORE_NAME_MAX} characters that starts with a letter (its Services and StatefulSets are named after it)`,
              ),
            ],
          },
        },
        subresources: {
          status: {},
          scale: { specReplicasPath: '.spec.nodes', statusReplicasPath: '.status.readyNodes', labelSelectorPath: '.status.selector' },
        },
        additionalPrinterColumns: [
          { name: 'Nodes', type: 'integer', jsonPath: '.spec.nodes', description: 'Nodes asked for.' },
          { name: 'Ready', type: 'integer', jsonPath: '.status.readyNodes', description: 'Nodes Ready.' },
          { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
          { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint', priority: 1, description: 'The client URL.' },
        ],
      },
    ],
  },
};
