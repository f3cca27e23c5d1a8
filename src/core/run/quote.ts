/**
 * Quoting for the remote POSIX shell. `ssh host CMD` hands CMD to the remote user's
 * login shell as one string, so every remote command Membit sends is an argv array
 * turned into that string here, and nowhere else.
 *
 * Each word is wrapped in single quotes, inside which a POSIX shell gives no
 * character a special meaning; a single quote itself ends the quoted part, is
 * written escaped (\'), and a new quoted part starts: `it's` → `'it'\''s'`.
 * That covers spaces, `$()`, backticks, globs, newlines and any UTF-8 text.
 * It assumes the login shell is sh-compatible (bash, dash, zsh, ksh); csh and fish
 * read backslashes and newlines inside single quotes differently.
 */

/**
 * Characters that never need quoting; words made only of these stay bare for readable
 * logs. `=` is not among them: a bare first word `A=b` would be an assignment.
 */
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

/** One argv word as a POSIX shell word that expands to exactly that string. */
export function shellQuote(arg: string): string {
  if (arg.includes('\0')) throw new Error('a shell word cannot contain a NUL byte');
  if (arg !== '' && SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** An argv array as one remote command line; the first word is the program. */
export function remoteCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('empty remote command');
  return argv.map(shellQuote).join(' ');
}
