/** Groups items under each of their keys (an item with several keys is in several groups). */
export function groupBy<T, K>(items: Iterable<T>, keys: (item: T) => Iterable<K>): Map<K, T[]> {
  const out = new Map<K, T[]>();
  for (const item of items) {
    for (const k of keys(item)) {
      let list = out.get(k);
      if (!list) out.set(k, (list = []));
      list.push(item);
    }
  }
  return out;
}
