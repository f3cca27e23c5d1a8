/**
 * Maps a frame's file (a path on the machine that recorded the snapshot) onto the
 * workspace by relative path, as reports from remote runs are: the longest tail of the
 * path that names a file in the workspace wins. Library files (site-packages, the
 * interpreter's own lib) never map, so a workspace file that happens to share a library
 * file's name does not collect the library's allocations.
 */
import { isAbsolute, join } from 'node:path';

const LIBRARY = /[\\/](site-packages|dist-packages)[\\/]|[\\/]lib[\\/]python\d(\.\d+)?[\\/]|^<frozen /;

export type PathMapper = (file: string) => string | null;

export function workspaceMapper(root: string, exists: (abs: string) => boolean): PathMapper {
  const cache = new Map<string, string | null>();
  return (file) => {
    let hit = cache.get(file);
    if (hit !== undefined) return hit;
    hit = null;
    const f = file.replace(/\\/g, '/');
    if (f.endsWith('.py') && !LIBRARY.test(f)) {
      if (!isAbsolute(f) && !/^[A-Za-z]:\//.test(f)) {
        const rel = f.replace(/^\.\//, '');
        if (!rel.startsWith('../') && exists(join(root, rel))) hit = rel;
      } else {
        const segs = f.split('/').filter((s) => s.length > 0);
        for (let i = 0; i < segs.length && hit === null; i++) {
          const rel = segs.slice(i).join('/');
          if (exists(join(root, rel))) hit = rel;
        }
      }
    }
    cache.set(file, hit);
    return hit;
  };
}
