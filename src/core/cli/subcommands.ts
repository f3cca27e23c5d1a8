import type { Subcommand } from './command';
import { convertCommand } from './convert';
import { maxBatchCommand } from './maxbatch';
import { predictCommand } from './predict';
import { profileCommand } from './profile';
import { reportCommand } from './report';
import { scanCommand } from './scan';

/** Every `membit` subcommand, in the order `--help` lists them. */
export const SUBCOMMANDS: readonly Subcommand[] = [scanCommand, convertCommand, profileCommand, maxBatchCommand, reportCommand, predictCommand];
