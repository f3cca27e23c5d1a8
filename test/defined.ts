import assert from 'node:assert/strict';

/** `v`, asserted to be there: the test fails here, naming what is missing, not on a property of undefined later. */
export function defined<T>(v: T, what: string): NonNullable<T> {
  assert.ok(v !== undefined && v !== null, `no ${what}`);
  return v;
}
