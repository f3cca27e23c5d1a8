/** Mutated inputs for the scanner's fuzz test and fuzz benchmark: one generator, two budgets. */
import { itemAt } from '../../src/core/arrays';

/** xorshift32: deterministic, so a failure reproduces from its seed. */
export function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

const decoder = new TextDecoder('utf-8', { fatal: false });

/**
 * Deletions, random bytes (invalid UTF-8 becomes U+FFFD), raw UTF-16 units (lone surrogates and
 * NUL), truncation, duplicated spans and stray Python punctuation: up to `maxOps` of them, with
 * duplicated spans up to `maxSpan` characters.
 */
export function mutate(text: string, r: (n: number) => number, maxOps: number, maxSpan: number): string {
  let t = text;
  const ops = 1 + r(maxOps);
  for (let i = 0; i < ops; i++) {
    const at = r(t.length + 1);
    switch (r(6)) {
      case 0: // delete a span
        t = t.slice(0, at) + t.slice(at + r(60));
        break;
      case 1: // random bytes decoded as UTF-8
        t = t.slice(0, at) + decoder.decode(new Uint8Array(1 + r(12)).map(() => r(256))) + t.slice(at);
        break;
      case 2: // raw UTF-16 units, lone surrogates and NUL included
        t = t.slice(0, at) + String.fromCharCode(...Array.from({ length: 1 + r(6) }, () => r(0x10000))) + t.slice(at);
        break;
      case 3: // truncate
        t = t.slice(0, at);
        break;
      case 4: {
        // duplicate a span elsewhere (unbalanced brackets, repeated defs)
        const from = r(t.length + 1);
        t = t.slice(0, at) + t.slice(from, from + r(maxSpan)) + t.slice(at);
        break;
      }
      default: // Python punctuation that breaks structure
        t = t.slice(0, at) + itemAt(['(', ')', ':', '"""', "'", '\\', '\n    ', '\t', 'def ', 'class ', '@', '[', '=', ','], r(14)) + t.slice(at);
    }
  }
  return t;
}
