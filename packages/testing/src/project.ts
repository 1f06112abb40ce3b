import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is at packages/testing/{src,dist}/project.*). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The built CLI. `npm test` builds before it runs. */
export const CLI_BIN = join(REPO_ROOT, 'packages/cli/dist/bin.js');

export interface TestProject {
  dir: string;
  write(path: string, content: string): string;
  remove(): void;
}

/**
 * A temporary project directory inside the repository (so flow files resolve `@tessera/sdk` from
 * its node_modules), removed by `remove()`.
 */
export function createTestProject(files: Record<string, string> = {}): TestProject {
  const dir = join(REPO_ROOT, '.tessera', 'test-projects', randomUUID());
  mkdirSync(dir, { recursive: true });
  const project: TestProject = {
    dir,
    write(path, content) {
      const full = join(dir, path);
      mkdirSync(dirname(full), { recursive: true });
      writeFileSync(full, content);
      return full;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  for (const [path, content] of Object.entries(files)) project.write(path, content);
  return project;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `tessera` CLI to completion. */
export function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_BIN, ...args], {
      cwd: options.cwd ?? REPO_ROOT,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`tessera ${args.join(' ')} did not finish in ${options.timeoutMs ?? 60_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`),
      );
    }, options.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface BackgroundProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
  /** Sends `signal`; with `killAfterMs`, sends SIGKILL if the process has not exited by then. */
  kill(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number | null>;
}

/** Starts a long-running CLI command (a worker, a server) in the background. */
export function startCli(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): BackgroundProcess {
  const child = spawn(process.execPath, [CLI_BIN, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async kill(signal = 'SIGTERM', killAfterMs?: number) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      if (killAfterMs !== undefined) {
        const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), killAfterMs);
        void exited.then(() => clearTimeout(timer));
      }
      return exited;
    },
  };
}
