/**
 * Edit distance counting an insertion, deletion, substitution or swap of two neighbours as one
 * (optimal string alignment), so `tgas` is one edit from `tags`. For short strings (keys, names).
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number) => (d[i] as number[])[j] as number;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}

const squash = (s: string) => s.toLowerCase().replace(/[-_\s]/g, '');

/**
 * The closest candidate to `input`, when one is close enough to be a likely typo
 * (`shedule` → `schedule`, `workPool` → `work_pool`), else `undefined`.
 */
export function didYouMean(input: string, candidates: readonly string[]): string | undefined {
  const sq = squash(input);
  const same = candidates.find((c) => squash(c) === sq);
  if (same) return same;
  // A word of a compound key: `queue` → `work_queue`.
  const word = candidates.find((c) => c.toLowerCase().split(/[-_]/).includes(input.toLowerCase()));
  if (word) return word;
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(sq, squash(c));
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(input.length / 3)));
  return bestDistance <= limit ? best : undefined;
}
