/**
 * A stand-in for the `vscode` module, so unit tests in plain Node can run code that calls a
 * few VS Code APIs (the command table): it records what is registered, executed and shown.
 * Import it before the code under test; from then on `require('vscode')` answers with it.
 * It has only what that code calls; anything else is undefined and fails loudly.
 */
import Module from 'node:module';

type Handler = (...args: unknown[]) => unknown;

/** One message shown through the window API, with the buttons it offered. */
export interface FakeShown {
  kind: 'info' | 'warning' | 'error';
  text: string;
  actions: string[];
}

/** The fake's state; tests read it and set `trusted` and `answer`. */
export const fake = {
  registered: new Map<string, Handler>(),
  executed: [] as { id: string; args: unknown[] }[],
  shown: [] as FakeShown[],
  /** vscode.workspace.isTrusted. */
  trusted: true,
  /** The button the user picks on each message (undefined: dismissed). */
  answer: undefined as string | undefined,
  reset(): void {
    this.registered.clear();
    this.executed.length = 0;
    this.shown.length = 0;
    this.trusted = true;
    this.answer = undefined;
  },
};

class Disposable {
  constructor(private readonly onDispose: () => void) {}
  dispose(): void {
    this.onDispose();
  }
}

class Uri {
  private constructor(readonly fsPath: string) {}
  static file(path: string): Uri {
    return new Uri(path);
  }
}

const show = (kind: FakeShown['kind']) => (text: string, ...actions: string[]) => {
  fake.shown.push({ kind, text, actions });
  return Promise.resolve(fake.answer !== undefined && actions.includes(fake.answer) ? fake.answer : undefined);
};

const api = {
  Disposable,
  Uri,
  commands: {
    registerCommand(id: string, handler: Handler): Disposable {
      // As VS Code does: a second registration of one id is an error, not an override.
      if (fake.registered.has(id)) throw new Error(`command '${id}' already exists`);
      fake.registered.set(id, handler);
      return new Disposable(() => fake.registered.delete(id));
    },
    executeCommand(id: string, ...args: unknown[]): Promise<unknown> {
      fake.executed.push({ id, args });
      // As VS Code does: the handler's throw comes back as a rejection.
      return new Promise((resolve) => {
        resolve(fake.registered.get(id)?.(...args));
      });
    },
  },
  workspace: {
    get isTrusted(): boolean {
      return fake.trusted;
    },
  },
  window: {
    showInformationMessage: show('info'),
    showWarningMessage: show('warning'),
    showErrorMessage: show('error'),
  },
};

// Node's module loader has no public hook for a synchronous require() of a name that does not
// exist on disk; `_load` is the seam test doubles for `vscode` commonly use.
const loader = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
const load = loader._load;
loader._load = function (request: string, ...rest: unknown[]) {
  return request === 'vscode' ? api : load.call(this, request, ...rest);
};
