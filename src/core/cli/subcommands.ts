import type { Subcommand } from './command';
import { convertCommand } from './convert';
import { predictCommand } from './predict';
import { profileCommand } from './profile';
import { reportCommand } from './report';
import { scanCommand } from './scan';

/** Every `membit` subcommand, in the order `--help` lists them. */
export const SUBCOMMANDS: readonly Subcommand[] = [scanCommand, convertCommand, profileCommand, reportCommand, predictCommand];
