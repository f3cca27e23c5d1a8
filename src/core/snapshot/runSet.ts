/**
 * Groups per-rank snapshot files into run sets by their names: the rank number is
 * replaced by a placeholder, and files whose names then agree belong to one set.
 * Names seen in the wild: torchtitan's `iteration_N/rankR_memory_snapshot.pickle`, the
 * `{rank:06d}_step_N.pickle` form, and `rankR.pickle` / `..._rank_R...` variants.
 */
import { basename, dirname } from 'node:path';

export interface RankFile {
  rank: number | null;
  path: string;
}

export interface SnapshotSet {
  /** The names with the rank replaced by `*`: what the members share. */
  key: string;
  /** Training step from the name (`iteration_N`, `step_N`), when there is one. */
  step: number | null;
  /** Members ordered by rank; a lone file without a rank has rank null. */
  members: RankFile[];
}

const RANK_PATTERNS: RegExp[] = [
  // torchtitan and most trainers: rank0_..., ..._rank3..., rank_12
  /(^|[^A-Za-z0-9])rank[_-]?(\d+)(?=$|[^0-9])/i,
  // {rank:06d}_step_N.pickle
  /^()(\d{1,6})(?=_step_?\d+)/i,
];

/** The rank a file name carries, and the name with the rank replaced by `*`. */
export function rankOf(path: string): { rank: number | null; key: string } {
  const name = basename(path);
  for (const re of RANK_PATTERNS) {
    const m = re.exec(name);
    if (m?.[2] !== undefined) {
      const start = m.index + (m[1] ?? '').length;
      const key = `${dirname(path)}/${name.slice(0, start)}${name.slice(start, start + m[0].length - (m[1] ?? '').length).replace(/\d+$/, '*')}${name.slice(start + m[0].length - (m[1] ?? '').length)}`;
      return { rank: Number(m[2]), key };
    }
  }
  return { rank: null, key: path };
}

function stepOf(path: string): number | null {
  const m = /(?:iteration|step|iter)[_-]?(\d+)/i.exec(path);
  return m ? Number(m[1]) : null;
}

/** Groups files into sets, in the order their first member was given. */
export function groupRunSets(paths: readonly string[]): SnapshotSet[] {
  const sets = new Map<string, SnapshotSet>();
  for (const path of paths) {
    const { rank, key } = rankOf(path);
    let set = sets.get(key);
    if (!set) sets.set(key, (set = { key, step: stepOf(path), members: [] }));
    if (rank !== null && set.members.some((m) => m.rank === rank)) continue;
    set.members.push({ rank, path });
  }
  for (const s of sets.values()) s.members.sort((a, b) => (a.rank ?? -1) - (b.rank ?? -1));
  return [...sets.values()];
}
