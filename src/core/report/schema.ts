/**
 * The report schema, from the Python package that writes reports, so both sides
 * validate against one file. esbuild inlines the JSON into the bundles.
 */
import type { Schema } from './jsonSchema';
import schemaJson from '../../../kernels/membit/profile/report.schema.json';

export const REPORT_SCHEMA: Schema = schemaJson;
