/**
 * A validator for the subset of JSON Schema (draft 2020-12 keywords) that the report
 * schema uses: type, properties, required, additionalProperties, items, enum, const,
 * minimum, maximum, minLength, anyOf, oneOf, $ref into $defs. Small and dependency-free
 * so the extension host loads no schema compiler; errors name the JSON path.
 */
export type Schema = boolean | SchemaObject;
export interface SchemaObject {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: Schema;
  items?: Schema;
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  anyOf?: Schema[];
  oneOf?: Schema[];
  $ref?: string;
  $defs?: Record<string, Schema>;
  definitions?: Record<string, Schema>;
  [k: string]: unknown;
}

export interface SchemaError {
  path: string;
  message: string;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(v: unknown, t: string): boolean {
  const actual = typeOf(v);
  return actual === t || (t === 'number' && actual === 'integer');
}

function resolveRef(root: SchemaObject, ref: string): Schema {
  const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
  const table = m ? (m[1] === '$defs' ? root.$defs : root.definitions) : undefined;
  const target = m && table ? table[m[2] as string] : undefined;
  if (target === undefined) throw new Error(`schema has an unresolvable $ref ${ref}`);
  return target;
}

/** Validates `value` and returns at most `limit` errors (none: valid). */
export function validate(schema: Schema, value: unknown, limit = 20): SchemaError[] {
  const root = typeof schema === 'object' ? schema : {};
  const errors: SchemaError[] = [];
  // `sink` lets anyOf/oneOf try an alternative without reporting its errors.
  const walk = (s: Schema, v: unknown, path: string, sink: SchemaError[] = errors): void => {
    const errors = sink;
    if (errors.length >= limit) return;
    if (s === true) return;
    if (s === false) {
      errors.push({ path, message: 'is not allowed here' });
      return;
    }
    if (s.$ref) walk(resolveRef(root, s.$ref), v, path, errors);
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type : [s.type];
      if (!types.some((t) => typeMatches(v, t))) {
        errors.push({ path, message: `should be ${types.join(' or ')}, got ${typeOf(v)}` });
        return;
      }
    }
    if (s.enum && !s.enum.some((e) => e === v)) errors.push({ path, message: `should be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${JSON.stringify(v)}` });
    if ('const' in s && s.const !== v) errors.push({ path, message: `should be ${JSON.stringify(s.const)}, got ${JSON.stringify(v)}` });
    if (typeof v === 'number') {
      if (s.minimum !== undefined && v < s.minimum) errors.push({ path, message: `should be ≥ ${s.minimum}, got ${v}` });
      if (s.maximum !== undefined && v > s.maximum) errors.push({ path, message: `should be ≤ ${s.maximum}, got ${v}` });
    }
    if (typeof v === 'string' && s.minLength !== undefined && v.length < s.minLength) errors.push({ path, message: `should have at least ${s.minLength} characters` });
    if (Array.isArray(v) && s.items !== undefined) {
      for (let i = 0; i < v.length && errors.length < limit; i++) walk(s.items, v[i], `${path}[${i}]`, errors);
    }
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>;
      for (const r of s.required ?? []) if (!(r in obj)) errors.push({ path, message: `is missing required field "${r}"` });
      for (const [k, val] of Object.entries(obj)) {
        const sub = s.properties?.[k];
        if (sub !== undefined) walk(sub, val, `${path}.${k}`, errors);
        else if (s.additionalProperties !== undefined) walk(s.additionalProperties, val, `${path}.${k}`, errors);
      }
    }
    for (const [key, list] of [['anyOf', s.anyOf], ['oneOf', s.oneOf]] as const) {
      if (!list) continue;
      const passing = list.filter((alt) => {
        const trial: SchemaError[] = [];
        walk(alt, v, path, trial);
        return trial.length === 0;
      }).length;
      if (key === 'anyOf' ? passing === 0 : passing !== 1) errors.push({ path, message: `does not match ${key === 'anyOf' ? 'any' : 'exactly one'} of the allowed shapes` });
    }
  };
  walk(schema, value, '$');
  return errors;
}
