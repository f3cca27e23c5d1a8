/**
 * A small, strict argument parser for the `membit` CLI. Strict because a typo in a
 * flag of a tool that rewrites model code must stop it, not be ignored.
 */

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

export interface ParsedArgs {
  flags: Map<string, string | boolean | string[]>;
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

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short as string, s]));
  const flags = new Map<string, string | boolean | string[]>();
  const positionals: string[] = [];
  let rest: string[] = [];

  const set = (spec: FlagSpec, value: string | boolean) => {
    if (typeof value === 'string' && spec.choices && !spec.choices.includes(value)) {
      throw new UsageError(`--${spec.name} must be one of ${spec.choices.join(', ')} (got "${value}")`);
    }
    if (spec.repeat) {
      const prev = flags.get(spec.name);
      flags.set(spec.name, [...(Array.isArray(prev) ? prev : []), String(value)]);
    } else {
      flags.set(spec.name, value);
    }
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      const spec = byName.get(name);
      if (!spec) throw new UsageError(`unknown option --${name}${suggest(name, specs)}`);
      if (spec.value) {
        let v: string | undefined;
        if (eq >= 0) v = arg.slice(eq + 1);
        else if (i + 1 < argv.length) v = argv[++i];
        if (v === undefined) throw new UsageError(`--${name} needs a value${spec.metavar ? ` (${spec.metavar})` : ''}`);
        set(spec, v);
      } else {
        if (eq >= 0) throw new UsageError(`--${name} takes no value`);
        set(spec, true);
      }
    } else if (arg.startsWith('-') && arg.length > 1) {
      const spec = byShort.get(arg.slice(1));
      if (!spec) throw new UsageError(`unknown option ${arg}`);
      if (spec.value) {
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${arg} needs a value`);
        set(spec, v);
      } else set(spec, true);
    } else {
      positionals.push(arg);
    }
  }
  return { flags, positionals, rest };
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
