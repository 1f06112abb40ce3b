import { ApiClient } from '@tessera/core';
import { type CliConfig, type ConfigFlags, resolveConfig } from './config.js';
import { CredentialStore, refresherFor } from './credentials.js';
import type { FormatOptions } from './format/runs.js';
import { FEDERATED_TOKEN_FILE_ENV, federatedTokenProvider } from './lib/federation.js';
import type { CliIo } from './lib/io.js';
import { createStyle, type Style, shouldColor } from './lib/style.js';
import { localTimeZone } from './lib/time.js';

/** Options every command accepts. */
export interface GlobalOptions {
  apiUrl?: string;
  debug?: boolean;
  /** `false` with `--no-color`. */
  color?: boolean;
}

/** What a command needs from its surroundings: output, configuration and a client. */
export class CliContext {
  readonly io: CliIo;
  /** Style for stdout. */
  readonly style: Style;
  /** Style for stderr. */
  readonly errStyle: Style;
  readonly debug: boolean;
  readonly timeZone: string;
  private readonly globals: GlobalOptions;

  constructor(io: CliIo, globals: GlobalOptions) {
    this.io = io;
    this.globals = globals;
    this.debug = globals.debug === true;
    this.style = createStyle({ color: shouldColor(io.stdout, io.env, globals.color), tty: io.stdout.isTTY === true });
    this.errStyle = createStyle({ color: shouldColor(io.stderr, io.env, globals.color), tty: io.stderr.isTTY === true });
    this.timeZone = validTimeZone(io.env.TZ) ?? localTimeZone();
  }

  /** Resolved settings; command flags win over the global `--api-url`, which wins over the environment. */
  config(flags: ConfigFlags = {}): CliConfig {
    return resolveConfig({ flags: { apiUrl: this.globals.apiUrl, ...stripUndefined(flags) }, env: this.io.env, cwd: this.io.cwd });
  }

  /**
   * An API client for the configured server (no retries: an unreachable server fails fast, exit 3).
   * After `tessera login` it sends the stored access token, refreshed as it nears expiry.
   */
  client(apiUrl?: string): ApiClient {
    const baseUrl = apiUrl ?? this.config().apiUrl;
    // CI and automation: a platform token file, exchanged under a trust policy (docs/security.md).
    const federated = this.io.env[FEDERATED_TOKEN_FILE_ENV];
    if (federated) return new ApiClient({ baseUrl, tokenProvider: federatedTokenProvider(baseUrl, federated) });
    const store = this.credentials();
    return new ApiClient({ baseUrl, tokenProvider: () => store.accessToken(baseUrl, refresherFor(baseUrl)) });
  }

  /** The credential store of `tessera login` (`<home>/credentials.json`). */
  credentials(): CredentialStore {
    return new CredentialStore(this.config().home);
  }

  /** Formatting options for pure formatters. */
  format(): FormatOptions {
    return { style: this.style, timeZone: this.timeZone, now: new Date() };
  }

  /** Writes a line (or lines) to stdout. */
  out(text = ''): void {
    this.io.stdout.write(`${text}\n`);
  }

  /** Writes a line to stderr: progress and diagnostics, so stdout stays parseable. */
  err(text = ''): void {
    this.io.stderr.write(`${text}\n`);
  }

  /** Prints a value as JSON on stdout, for `--json`. */
  json(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function validTimeZone(tz: string | undefined): string | undefined {
  if (!tz || tz.startsWith(':')) return undefined;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return undefined;
  }
}
