/**
 * The `membit` CLI's argument parsing, strict: a typo in a flag of a tool that rewrites
 * model code must stop it, not be ignored.
 */
import { parseArgs as nodeParseArgs } from 'node:util';
import { itemAt } from '../arrays';

export interface FlagSpec {
  /** Long name without dashes, e.g. "dry-run". */
  name: string;
  /** One-letter alias without dash. */
  short?: string;
  /** A flag that takes a value (`--out file`); otherwise boolean. */
  value?: boolean;
  /** Allowed values, checked when given. */
  choices?: readonly string[];
  /** May be repeated; values collect into an array. */
  repeat?: boolean;
  help: string;
  /** Placeholder in help text, e.g. "FILE". */
  metavar?: string;
}

/** A flag's value: its text, true for a switch, every value for a repeatable flag. */
export type FlagValue = string | boolean | string[];

export interface ParsedArgs {
  flags: Map<string, FlagValue>;
  positionals: string[];
  /** Everything after a bare `--`, untouched. */
  rest: string[];
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Parses one subcommand's argv. node's util.parseArgs splits the words into tokens
 * (`--name=value`, a value in the next word, the `--` terminator); the checks are ours,
 * in argv order, so the first problem is the one named, with the flag as typed:
 *  - strict mode is off: its messages offer no "did you mean", and it refuses a value
 *    that starts with `-` (`--python -x`), which this CLI takes as given;
 *  - a short flag stands alone (`-h`, `-o FILE`): grouped or glued forms (`-jh`,
 *    `-oFILE`), which parseArgs would accept, stay refused;
 *  - everything after the first bare `--` is the script's own argv, untouched.
 */
export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const s of specs) options[s.name] = { type: s.value ? 'string' : 'boolean', ...(s.short ? { short: s.short } : {}) };
  const { tokens } = nodeParseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];

  for (const t of tokens) {
    if (t.kind === 'option-terminator') return { flags, positionals, rest: argv.slice(t.index + 1) };
    if (t.kind === 'positional') {
      positionals.push(t.value);
      continue;
    }
    const word = itemAt(argv, t.index);
    const short = !t.rawName.startsWith('--');
    const spec = byName.get(t.name);
    // parseArgs names an unknown `-q` after its letter, which could be a long flag's name.
    if (short && (spec?.short !== t.rawName.slice(1) || word !== t.rawName)) throw new UsageError(`unknown option ${word}`);
    if (!spec) throw new UsageError(`unknown option ${t.rawName}${suggest(t.name, specs)}`);
    if (!spec.value) {
      if (t.inlineValue) throw new UsageError(`--${spec.name} takes no value`);
      flags.set(spec.name, true);
      continue;
    }
    if (t.value === undefined) throw new UsageError(`${t.rawName} needs a value${!short && spec.metavar ? ` (${spec.metavar})` : ''}`);
    if (spec.choices && !spec.choices.includes(t.value)) {
      throw new UsageError(`--${spec.name} must be one of ${spec.choices.join(', ')} (got "${t.value}")`);
    }
    if (spec.repeat) {
      const prev = flags.get(spec.name);
      flags.set(spec.name, [...(Array.isArray(prev) ? prev : []), t.value]);
    } else {
      flags.set(spec.name, t.value);
    }
  }
  return { flags, positionals, rest: [] };
}

function suggest(name: string, specs: readonly FlagSpec[]): string {
  const close = specs.find((s) => s.name.startsWith(name.slice(0, 3)));
  return close ? ` (did you mean --${close.name}?)` : '';
}

export function formatFlags(specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.value ? ` ${s.metavar ?? 'VALUE'}` : ''}`;
    const choices = s.choices ? ` (${s.choices.join('|')})` : '';
    return [left, s.help + choices] as const;
  });
  const width = Math.max(0, ...rows.map(([l]) => l.length)) + 2;
  return rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`).join('\n');
}
