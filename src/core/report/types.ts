/**
 * The profile report, schema `membit.report/1`. The JSON Schema in
 * kernels/membit/profile/report.schema.json is the authority (and documents each field);
 * the types are generated from it (types.generated.ts, `npm run gen:report-types`), and this
 * module is where the rest of the code imports them from.
 */

export type * from './types.generated';
// The schema's title is the human one ("Membit profile report"); the code calls it Report.
export type { MembitProfileReport as Report } from './types.generated';
export { peakBytes } from './peak';
