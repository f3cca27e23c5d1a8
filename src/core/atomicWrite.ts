/**
 * Replace a user's file without ever leaving it half written.
 *
 * `writeFileSync(path)` truncates first and writes after: a full disk, a file-size
 * limit (EFBIG under `ulimit -f`) or a crash in between leaves the new head with the
 * old tail cut off. Here the new text goes to a temporary file in the same folder (same
 * file system, so the rename is atomic), is flushed, gets the original's mode (and owner
 * where we may set it), and only then is renamed over the original. On any failure the
 * temporary file is removed and the original is untouched.
 *
 * A rename gives the name a new inode. For a symlink we therefore write to the file it
 * points to (the link stays a link); for a file with several hard links we refuse:
 * the other names would keep the old text, silently splitting what the user thinks is
 * one file.
 */
import { closeSync, existsSync, fchmodSync, fchownSync, fsyncSync, openSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Why a file cannot be replaced atomically, or undefined when it can. */
export function atomicWriteRefusal(path: string): string | undefined {
  const st = statSync(path);
  if (!st.isFile()) return 'not a regular file';
  if (st.nlink > 1) {
    return `has ${st.nlink} hard links: rewriting it would split this name from the others (they would keep the old text); copy it to a file of its own (cp --remove-destination) and run again`;
  }
  return undefined;
}

/**
 * Writes `data` to `path` atomically, keeping the file's mode (and owner when allowed).
 * Throws (with the original untouched) on failure or when `atomicWriteRefusal` names a reason.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  // A new file (a report written with --out, say) gets the mode a plain write would give it.
  const exists = existsSync(path);
  const target = exists ? realpathSync(path) : join(realpathSync(dirname(path)), basename(path));
  if (exists) {
    const refusal = atomicWriteRefusal(target);
    if (refusal) throw new Error(refusal);
  }
  const st = exists ? statSync(target) : undefined;
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // A dot name so editors and `membit scan` skip it should it ever be left behind.
  const tmp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.membit-tmp`);
  // An existing file's mode is copied below; a new one gets 0o666 less the umask, as a plain write.
  const fd = openSync(tmp, 'wx', st ? 0o600 : 0o666);
  let renamed = false;
  try {
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      // The umask applied to openSync's mode; set the original's bits exactly.
      if (st) fchmodSync(fd, st.mode & 0o7777);
      if (st && typeof process.getuid === 'function' && (st.uid !== process.getuid() || st.gid !== process.getgid?.())) {
        try {
          fchownSync(fd, st.uid, st.gid);
        } catch {
          // Only root may give a file away; the file then belongs to us, as any editor's save would.
        }
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, target);
    renamed = true;
  } finally {
    if (!renamed) {
      try {
        unlinkSync(tmp);
      } catch {
        // Already gone: nothing to clean.
      }
    }
  }
}
