import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs, UsageError } from '../../src/core/cli/args';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import pkg from '../../package.json';


test('top-level --help lists every subcommand and exits 0', async () => {
  const io = capture();
  assert.equal(await main(['--help'], io), 0);
  for (const name of ['scan', 'convert', 'profile', 'report']) assert.match(io.stdout, new RegExp(`^  ${name} `, 'm'));
});

test('no arguments prints help and exits 2 (a usage error)', async () => {
  const io = capture();
  assert.equal(await main([], io), 2);
  assert.match(io.stdout, /Usage: membit <command>/);
});

test('an unknown command names itself and the valid ones', async () => {
  const io = capture();
  assert.equal(await main(['scna'], io), 2);
  assert.match(io.stderr, /unknown command "scna"/);
  assert.match(io.stderr, /scan, convert, profile, maxbatch, report, predict/);
});

test('each subcommand has real --help text with its options', async () => {
  const cases: [string, string][] = [
    ['scan', '--json'],
    ['convert', '--dropout'],
    ['report', '--markdown'],
    ['maxbatch', '--nproc-per-node'],
  ];
  for (const [cmd, flag] of cases) {
    const io = capture();
    assert.equal(await main([cmd, '--help'], io), 0, cmd);
    assert.match(io.stdout, new RegExp(`Usage: membit ${cmd}`));
    assert.ok(io.stdout.includes(flag), `${cmd} --help lacks ${flag}`);
  }
});

test('an unknown option is a usage error with a suggestion', async () => {
  const io = capture();
  assert.equal(await main(['convert', '--dropot', 'packed', 'x.py'], io), 2);
  assert.match(io.stderr, /unknown option --dropot \(did you mean --dropout\?\)/);
});

test('a bad choice names the allowed values', async () => {
  const io = capture();
  assert.equal(await main(['convert', '--dropout', 'fast', 'x.py'], io), 2);
  assert.match(io.stderr, /--dropout must be one of packed, recompute \(got "fast"\)/);
});

test('--version prints the package version', async () => {
  const io = capture();
  assert.equal(await main(['--version'], io), 0);
  assert.equal(io.stdout.trim(), pkg.version);
});

test('parseArgs: values, =values, repeats, and everything after -- untouched', () => {
  const specs = [
    { name: 'out', value: true, help: '' },
    { name: 'variant', value: true, repeat: true, help: '' },
    { name: 'json', help: '' },
  ];
  const p = parseArgs(['a.py', '--out=r.json', '--variant', 'packed', '--variant=baseline', '--json', '--', 'x.py', '--out', '$(rm -rf /)'], specs);
  assert.deepEqual(p.positionals, ['a.py']);
  assert.equal(p.flags.get('out'), 'r.json');
  assert.deepEqual(p.flags.get('variant'), ['packed', 'baseline']);
  assert.equal(p.flags.get('json'), true);
  assert.deepEqual(p.rest, ['x.py', '--out', '$(rm -rf /)']);
});

test('parseArgs: a value flag at the end without a value is an error', () => {
  assert.throws(() => parseArgs(['--out'], [{ name: 'out', value: true, help: '' }]), UsageError);
  assert.throws(() => parseArgs(['--json=1'], [{ name: 'json', help: '' }]), /takes no value/);
});

test('parseArgs: short flags, values that look like flags, and what is refused, each naming the flag', () => {
  const specs = [
    { name: 'out', short: 'o', value: true, metavar: 'FILE', help: '' },
    { name: 'python', value: true, help: '' },
    { name: 'launch', value: true, choices: ['torchrun', 'srun'], help: '' },
    { name: 'env', value: true, repeat: true, help: '' },
    { name: 'json', short: 'j', help: '' },
    { name: 'help', short: 'h', help: '' },
    { name: 'q', help: '' },
  ];
  const ok = (argv: string[]) => {
    const p = parseArgs(argv, specs);
    return { flags: Object.fromEntries(p.flags), positionals: p.positionals, rest: p.rest };
  };
  // A value is the next word, whatever it looks like (a flag, a dash, even --).
  assert.deepEqual(ok(['--out', '-x', '--python', '--', 'a.py']), { flags: { out: '-x', python: '--' }, positionals: ['a.py'], rest: [] });
  assert.deepEqual(ok(['-o', 'r.json', '-j', '-', 'a.py']), { flags: { out: 'r.json', json: true }, positionals: ['-', 'a.py'], rest: [] });
  assert.deepEqual(ok(['--out=a=b', '--env', 'A=1', '--env=B=', '--json', '--json']), { flags: { out: 'a=b', env: ['A=1', 'B='], json: true }, positionals: [], rest: [] });
  // The last of a repeated single-value flag wins; `--` keeps the rest verbatim, an empty one too.
  assert.deepEqual(ok(['--out', 'a', '--out', 'b', 'x', '--', '--json', '-h', '--']), { flags: { out: 'b' }, positionals: ['x'], rest: ['--json', '-h', '--'] });
  assert.deepEqual(ok(['--']), { flags: {}, positionals: [], rest: [] });
  assert.deepEqual(ok(['--launch=srun']), { flags: { launch: 'srun' }, positionals: [], rest: [] });
  const refused: [string[], RegExp][] = [
    [['--outt', 'x'], /^unknown option --outt \(did you mean --out\?\)$/],
    [['--nope=1'], /^unknown option --nope$/],
    [['-x'], /^unknown option -x$/],
    [['-q'], /^unknown option -q$/],
    [['-jh'], /^unknown option -jh$/],
    [['-or.json'], /^unknown option -or\.json$/],
    [['-1'], /^unknown option -1$/],
    [['--out'], /^--out needs a value \(FILE\)$/],
    [['-o'], /^-o needs a value$/],
    [['--python'], /^--python needs a value$/],
    [['--json=yes'], /^--json takes no value$/],
    [['--launch', 'mpirun'], /^--launch must be one of torchrun, srun \(got "mpirun"\)$/],
    [['--launch='], /^--launch must be one of torchrun, srun \(got ""\)$/],
    // The first problem is the one named.
    [['--json=1', '--nope'], /^--json takes no value$/],
  ];
  for (const [argv, message] of refused) {
    assert.throws(() => parseArgs(argv, specs), (e: unknown) => e instanceof UsageError && message.test(e.message), argv.join(' '));
  }
});
