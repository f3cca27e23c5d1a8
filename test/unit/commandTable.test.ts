// First: the command table's `require('vscode')` must find the fake.
import { fake } from './fakeVscode';
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import type * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../src/commands';
import { COMMANDS, INTERNAL_COMMANDS, registerCommands, RUNS_CODE, TEST_HOOKS, UNTRUSTED, type Features } from '../../src/vscode/commandTable';
import type { Log } from '../../src/vscode/log';
import pkg from '../../package.json';

const contributed = pkg.contributes.commands.map((c) => c.command);

/**
 * Features whose every handler records that it ran (by its path, e.g. `report.commands.showReport`)
 * and answers `ran <path>`, or throws `boom` when asked to: the factories only pick handlers.
 */
function recordingFeatures(calls: string[], throws = false): Features {
  const node = (path: string): unknown =>
    new Proxy(() => undefined, {
      // Not thenable, so an awaited handler result stays what it is.
      get: (_target, key) => (key === 'then' || typeof key === 'symbol' ? undefined : node(path ? `${path}.${key}` : key)),
      apply: () => {
        calls.push(path);
        if (throws) throw new Error('boom');
        return `ran ${path}`;
      },
    });
  return node('') as Features;
}

/**
 * Runs the registration as activate() does, in a workspace trusted or not, with MEMBIT_TEST_HOOKS
 * set to `hooks` (undefined: unset).
 */
function activateWith(opts: { trusted: boolean; hooks?: string | undefined; throws?: boolean }) {
  fake.reset();
  fake.trusted = opts.trusted;
  if (opts.hooks === undefined) delete process.env['MEMBIT_TEST_HOOKS'];
  else process.env['MEMBIT_TEST_HOOKS'] = opts.hooks;
  const calls: string[] = [];
  const logged: string[] = [];
  const record = (m: string) => void logged.push(m);
  const log = { info: record, warn: record, error: record } as unknown as Log;
  const context = { subscriptions: [] as { dispose(): unknown }[] };
  const commands = registerCommands(context as unknown as vscode.ExtensionContext, log, recordingFeatures(calls, opts.throws));
  const run = (id: string, ...args: unknown[]) => {
    const handler = fake.registered.get(id);
    assert.ok(handler, `${id} is not registered`);
    return handler(...args);
  };
  return { commands, context, calls, logged, run };
}

afterEach(() => {
  delete process.env['MEMBIT_TEST_HOOKS'];
});

test('package.json contributes exactly the commands of the command table, and nothing internal', () => {
  const table = Object.keys(COMMANDS);
  assert.deepEqual(contributed.filter((id) => !table.includes(id)), [], 'contributed in package.json but missing from the command table');
  assert.deepEqual(table.filter((id) => !contributed.includes(id)), [], 'in the command table but not contributed in package.json');
  const hidden = [...Object.keys(INTERNAL_COMMANDS), ...Object.keys(TEST_HOOKS)];
  assert.deepEqual(hidden.filter((id) => contributed.includes(id)), [], 'an internal command or test hook is contributed');
  // Menus may only name commands that exist.
  for (const [menu, entries] of Object.entries(pkg.contributes.menus)) {
    for (const e of entries) assert.ok(table.includes(e.command), `menu ${menu} names ${e.command}, which the table lacks`);
  }
});

test('one loop registers the table, each registration owned by the extension context; test hooks only with MEMBIT_TEST_HOOKS=1', () => {
  for (const hooks of [undefined, '1', 'true', '0']) {
    const { commands, context } = activateWith({ trusted: true, hooks });
    const expected = [...Object.keys(COMMANDS), ...Object.keys(INTERNAL_COMMANDS), ...(hooks === '1' ? Object.keys(TEST_HOOKS) : [])].sort();
    assert.deepEqual([...fake.registered.keys()].sort(), expected, `MEMBIT_TEST_HOOKS=${hooks ?? '(unset)'}`);
    assert.deepEqual([...commands].sort(), [...contributed].sort(), 'activate() reports the contributed commands it registered');
    assert.equal(context.subscriptions.length, expected.length, 'one Disposable per command, in context.subscriptions');
    for (const d of context.subscriptions) d.dispose();
    assert.equal(fake.registered.size, 0, 'disposing the context unregisters every command');
  }
  for (const id of Object.keys(TEST_HOOKS)) assert.match(id, /^membit\._test\./);
});

test('untrusted: each command with a disabled variant shows its reason and runs nothing; every other command runs', async () => {
  const { calls, run } = activateWith({ trusted: false });
  const disabled = { runsCode: [] as string[], readsReports: [] as string[] };
  for (const [id, factory] of Object.entries(COMMANDS)) {
    calls.length = 0;
    fake.shown.length = 0;
    const result = await run(id);
    const refusal = factory.untrusted;
    if (!refusal) {
      assert.equal(calls.length, 1, `${id} did not run in an untrusted workspace`);
      assert.deepEqual(fake.shown, [], `${id} showed a message instead of running`);
      continue;
    }
    assert.deepEqual(calls, [], `${id} ran in an untrusted workspace`);
    assert.equal(result, undefined);
    assert.deepEqual(fake.shown, [{ kind: 'error', text: refusal.message, actions: refusal.action ? [refusal.action.title] : [] }], `${id} did not say why`);
    if (refusal === UNTRUSTED.runsCode) disabled.runsCode.push(id);
    if (refusal === UNTRUSTED.readsReports) disabled.readsReports.push(id);
  }
  // The reasons users read (the Restricted Mode e2e suite matches the same words).
  assert.match(UNTRUSTED.runsCode.message, /disabled until you trust the workspace/);
  assert.match(UNTRUSTED.readsReports.message, /shown only once you trust it/);
  disabled.runsCode.sort();
  disabled.readsReports.sort();
  assert.deepEqual(disabled, {
    runsCode: [Commands.profileRun, Commands.compareVariants, Commands.findMaxBatchSize, Commands.predictMemory].sort(),
    readsReports: [Commands.compareRuns, Commands.showReport].sort(),
  });
  assert.deepEqual([...RUNS_CODE].sort(), disabled.runsCode, 'RUNS_CODE (the Restricted Mode e2e suite iterates it) is what the table refuses');
  // The palette greys out what package.json marks; the table refuses the same commands when called another way.
  const enablement = pkg.contributes.commands.filter((c) => /\bisWorkspaceTrusted\b/.test(c.enablement ?? '')).map((c) => c.command).sort();
  assert.deepEqual(disabled.runsCode, enablement, 'package.json enablement isWorkspaceTrusted and the table disagree');
});

test('the refusal\'s button opens Manage Workspace Trust; once trust is granted the same registration runs the command', async () => {
  const { calls, run } = activateWith({ trusted: false });
  fake.answer = 'Manage Workspace Trust';
  assert.equal(await run(Commands.profileRun), undefined);
  assert.deepEqual(fake.executed.map((e) => e.id), ['workbench.trust.manage']);
  assert.deepEqual(calls, []);
  fake.trusted = true;
  assert.equal(await run(Commands.profileRun, 'arg'), 'ran run.profileRun');
  assert.equal(await run(Commands.showReport), 'ran report.commands.showReport');
  assert.deepEqual(calls, ['run.profileRun', 'report.commands.showReport']);
});

test('a command that fails shows the error and logs it; internal plumbing and test hooks reject to their caller', async () => {
  const { run, logged } = activateWith({ trusted: true, hooks: '1', throws: true });
  assert.equal(await run(Commands.convertAllInFile), undefined);
  assert.deepEqual(fake.shown, [{ kind: 'error', text: 'Membit: boom', actions: [] }]);
  assert.ok(logged.some((m) => m.startsWith(`${Commands.convertAllInFile} failed: Error: boom`)), logged.join('\n'));
  // The hooks that read a feature (recentlyShown reads notify; scanState first wants a Uri).
  const reading = [InternalCommands.appliedOverlays, InternalCommands.reportViewRendered, InternalCommands.statusBar, InternalCommands.gpuBackend, InternalCommands.reloadReports];
  // As VS Code's executeCommand does, a handler's throw reaches its caller as a rejection.
  const called = (id: string) =>
    new Promise((resolve) => {
      resolve(run(id));
    });
  for (const id of reading) await assert.rejects(called(id), /boom/, id);
});
