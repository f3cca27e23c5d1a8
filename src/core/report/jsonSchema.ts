/**
 * A validator for the subset of JSON Schema (draft 2020-12 keywords) that the report
 * schema uses: type, properties, required, additionalProperties, items, enum, const,
 * minimum, maximum, minLength, pattern, anyOf, oneOf, $ref into $defs. Small and dependency-free
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
  /** An ECMA-262 regular expression the string must match somewhere (anchor it with ^…$). */
  pattern?: string;
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

function hasOwn(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
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
  const name = m?.[2];
  const target = name !== undefined && table ? table[name] : undefined;
  if (target === undefined) throw new Error(`schema has an unresolvable $ref ${ref}`);
  return target;
}

/**
 * Validates `value` and returns at most `limit` errors (none: valid).
 *
 * Large reports hold arrays of a million numbers, so the walk allocates nothing per
 * valid element: the JSON path is a stack of segments joined only when an error is
 * reported, and $refs are resolved once.
 */
export function validate(schema: Schema, value: unknown, limit = 20): SchemaError[] {
  const root = typeof schema === 'object' ? schema : {};
  const errors: SchemaError[] = [];
  const refs = new Map<string, Schema>();
  const ref = (r: string): Schema => {
    let t = refs.get(r);
    if (t === undefined) refs.set(r, (t = resolveRef(root, r)));
    return t;
  };
  const segments: (string | number)[] = [];
  const patterns = new Map<string, RegExp>();
  const patternOf = (p: string): RegExp => {
    let re = patterns.get(p);
    if (!re) patterns.set(p, (re = new RegExp(p, 'u')));
    return re;
  };
  // A fast check for scalar item schemas (type, bounds, enum, $ref to such), built once
  // per schema: array elements that pass it skip the walk; others get the full walk
  // and its errors.
  const scalarChecks = new Map<Schema, ((v: unknown) => boolean) | null>();
  const scalarCheck = (s: Schema): ((v: unknown) => boolean) | null => {
    let c = scalarChecks.get(s);
    if (c !== undefined) return c;
    c = null;
    if (typeof s === 'object') {
      const keys = Object.keys(s).filter((k) => k !== 'description');
      const target = s.$ref ? ref(s.$ref) : undefined;
      const simple = keys.every((k) => k === 'type' || k === 'minimum' || k === 'maximum' || k === 'enum' || k === '$ref');
      const inner = target !== undefined ? scalarCheck(target) : undefined;
      if (simple && inner !== null) {
        const types = s.type === undefined ? undefined : Array.isArray(s.type) ? s.type : [s.type];
        const { minimum, maximum, enum: allowed } = s;
        c = (v) => {
          if (inner && !inner(v)) return false;
          if (types && !types.some((t) => typeMatches(v, t))) return false;
          if (allowed && !allowed.includes(v)) return false;
          if (typeof v === 'number' && ((minimum !== undefined && v < minimum) || (maximum !== undefined && v > maximum))) return false;
          return true;
        };
      }
    }
    scalarChecks.set(s, c);
    return c;
  };
  const pathOf = (): string => {
    let p = '$';
    for (const seg of segments) p += typeof seg === 'number' ? `[${seg}]` : `.${seg}`;
    return p;
  };
  // `sink` lets anyOf/oneOf try an alternative without reporting its errors.
  const walk = (s: Schema, v: unknown, errors: SchemaError[]): void => {
    if (errors.length >= limit) return;
    if (s === true) return;
    if (s === false) {
      errors.push({ path: pathOf(), message: 'is not allowed here' });
      return;
    }
    if (s.$ref) walk(ref(s.$ref), v, errors);
    if (s.type !== undefined) {
      const t = s.type;
      if (typeof t === 'string' ? !typeMatches(v, t) : !t.some((x) => typeMatches(v, x))) {
        const types = Array.isArray(t) ? t : [t];
        errors.push({ path: pathOf(), message: `should be ${types.join(' or ')}, got ${typeOf(v)}` });
        return;
      }
    }
    if (s.enum && !s.enum.includes(v)) errors.push({ path: pathOf(), message: `should be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${JSON.stringify(v)}` });
    if (s.const !== undefined || 'const' in s) {
      if (s.const !== v) errors.push({ path: pathOf(), message: `should be ${JSON.stringify(s.const)}, got ${JSON.stringify(v)}` });
    }
    if (typeof v === 'number') {
      if (s.minimum !== undefined && v < s.minimum) errors.push({ path: pathOf(), message: `should be ≥ ${s.minimum}, got ${v}` });
      if (s.maximum !== undefined && v > s.maximum) errors.push({ path: pathOf(), message: `should be ≤ ${s.maximum}, got ${v}` });
    }
    if (typeof v === 'string' && s.minLength !== undefined && v.length < s.minLength) errors.push({ path: pathOf(), message: `should have at least ${s.minLength} characters` });
    if (typeof v === 'string' && s.pattern !== undefined && !patternOf(s.pattern).test(v)) errors.push({ path: pathOf(), message: `should match ${s.pattern}, got ${JSON.stringify(v)}` });
    if (s.items !== undefined && Array.isArray(v)) {
      const fast = scalarCheck(s.items);
      const depth = segments.length;
      segments.push(0);
      for (let i = 0; i < v.length && errors.length < limit; i++) {
        if (fast?.(v[i])) continue;
        segments[depth] = i;
        walk(s.items, v[i], errors);
      }
      segments.length = depth;
    }
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>;
      // Own keys only, here and below: `in` and `properties[k]` would also see the
      // prototype's `toString`, `constructor` and `__proto__`.
      if (s.required) for (const r of s.required) if (!hasOwn(obj, r)) errors.push({ path: pathOf(), message: `is missing required field "${r}"` });
      if (s.properties !== undefined || s.additionalProperties !== undefined) {
        const depth = segments.length;
        segments.push('');
        for (const k in obj) {
          if (!hasOwn(obj, k)) continue;
          const sub = s.properties !== undefined && hasOwn(s.properties, k) ? s.properties[k] : undefined;
          segments[depth] = k;
          if (sub !== undefined) walk(sub, obj[k], errors);
          else if (s.additionalProperties !== undefined) walk(s.additionalProperties, obj[k], errors);
        }
        segments.length = depth;
      }
    }
    if (s.anyOf) alternatives(s.anyOf, v, errors, 'anyOf');
    if (s.oneOf) alternatives(s.oneOf, v, errors, 'oneOf');
  };
  const alternatives = (list: Schema[], v: unknown, errors: SchemaError[], key: 'anyOf' | 'oneOf'): void => {
    let passing = 0;
    for (const alt of list) {
      const trial: SchemaError[] = [];
      walk(alt, v, trial);
      if (trial.length === 0) {
        passing++;
        if (key === 'anyOf') break;
      }
    }
    if (key === 'anyOf' ? passing === 0 : passing !== 1) errors.push({ path: pathOf(), message: `does not match ${key === 'anyOf' ? 'any' : 'exactly one'} of the allowed shapes` });
  };
  walk(schema, value, errors);
  return errors;
}
