/** The Restricted Mode suite's entry (run by `codeServer.js --untrusted`). */
import { runSuite } from '../suite/index';

export function run(): Promise<void> {
  return runSuite(__dirname);
}
