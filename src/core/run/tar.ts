/**
 * A minimal ustar writer: regular files with short ASCII names, which is all the
 * upload sends (entries are named by content hash, the real paths travel in a JSON
 * manifest), so no PAX headers are needed and any tar can extract it. Written here
 * rather than spawning the local `tar` because flags and name handling differ between
 * GNU tar, bsdtar (macOS, Windows) and busybox.
 */

const BLOCK = 512;

function octal(n: number, width: number): string {
  // width - 1 digits then a NUL, as ustar expects.
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/** The 512-byte header of one regular file. */
export function tarHeader(name: string, size: number, mode = 0o644, mtime = Math.floor(Date.now() / 1000)): Buffer {
  if (!/^[\x21-\x7e]{1,99}$/.test(name)) throw new Error(`tar entry name must be short printable ASCII: ${JSON.stringify(name)}`);
  if (!Number.isSafeInteger(size) || size < 0 || size >= 8 ** 11) throw new Error(`tar entry too large: ${size} bytes`);
  const h = Buffer.alloc(BLOCK, 0);
  h.write(name, 0, 'ascii');
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(mtime, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum counts as spaces while summing
  h.write('0', 156, 'ascii'); // regular file
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

/** Zero bytes that pad an entry of `size` bytes to a whole block. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest, 0);
}

/** Two zero blocks end the archive. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK, 0);
}

/** One whole entry: header, data, padding. */
export function tarEntry(name: string, data: Buffer, mode = 0o644): Buffer {
  return Buffer.concat([tarHeader(name, data.length, mode), data, tarPadding(data.length)]);
}
