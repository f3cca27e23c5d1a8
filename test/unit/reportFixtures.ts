/**
 * Where the harness-written report fixtures are: the folder the test command regenerates on
 * every run with the current harness (`scripts/make-report-fixtures.sh`, named by
 * MEMBIT_REPORT_FIXTURES), else the committed copies in test/fixtures/reports for a quick run.
 */
import { join, resolve } from 'node:path';

export const reportFixtureDir = process.env['MEMBIT_REPORT_FIXTURES']
  ? resolve(process.env['MEMBIT_REPORT_FIXTURES'])
  : join(__dirname, '..', '..', '..', 'test', 'fixtures', 'reports');

export const reportFixture = (name: string): string => join(reportFixtureDir, name);
