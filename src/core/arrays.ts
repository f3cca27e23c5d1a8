/**
 * `a[i]` where the caller's own bounds keep `i` in range (a loop to `length`, columns of one
 * length indexed by the same row) but TypeScript cannot see it: the bound is checked here, so
 * an index out of range is a RangeError at the read instead of an `undefined` that turns into
 * NaN or a crash somewhere later. Not for arrays that may hold `undefined`.
 */
export function itemAt<T>(a: ArrayLike<T>, i: number): T {
  const v = a[i];
  if (v === undefined) throw new RangeError(`index ${i} is out of range (length ${a.length})`);
  return v;
}

/**
 * `v`, where the code around it guarantees a value (a field tree-sitter's grammar always
 * gives that node type, a group known to be non-empty) but TypeScript cannot see it: the
 * guarantee is checked here, so a broken one is an Error naming `what` at the read instead
 * of an `undefined` that fails somewhere later.
 */
export function defined<T>(v: T | null | undefined, what: string): T {
  if (v === undefined || v === null) throw new Error(`internal: expected ${what}`);
  return v;
}

/**
 * The last index `i` with `sorted[i] <= x` in an ascending array (0 when `x` is below them
 * all): the line of an offset in a table of line starts, the cell of a line in a table of
 * cell starts.
 */
export function lastAtOrBelow(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (itemAt(sorted, mid) <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Indices that thin `values` to at most `buckets` points for a chart, keeping each bucket's
 * highest point (its first, on a tie) so that peaks survive the thinning. Every index, in
 * order, where there are no more values than buckets.
 */
export function bucketMaxima(values: ArrayLike<number>, buckets: number): number[] {
  const n = values.length;
  if (n <= buckets) return Array.from({ length: n }, (_, i) => i);
  const out: number[] = [];
  const step = n / buckets;
  for (let j = 0; j < buckets; j++) {
    const lo = Math.floor(j * step);
    const hi = Math.min(n, Math.max(Math.floor((j + 1) * step), lo + 1));
    let best = lo;
    let bestValue = itemAt(values, lo);
    // One read per point: snapshot timelines run to millions of events.
    for (let k = lo + 1; k < hi; k++) {
      const v = itemAt(values, k);
      if (v > bestValue) {
        best = k;
        bestValue = v;
      }
    }
    out.push(best);
  }
  return out;
}
