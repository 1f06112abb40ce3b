/** Tables of 0007-sessions (issue #5, people's login). Times are ISO-8601 UTC strings, JSON is text. */

/** A logged-in person: a browser session (cookie) or a CLI session (refresh token). */
export interface SessionTable {
  id: string;
  kind: 'browser' | 'cli';
  /** SHA-256 hex of the session cookie (browser). */
  secret_hash: string | null;
  /** SHA-256 hex of the current refresh token (CLI). */
  refresh_hash: string | null;
  /** SHA-256 hex of the refresh token the current one replaced: presenting it again revokes the session. */
  previous_refresh_hash: string | null;
  provider: string;
  subject: string;
  person_id: string;
  label: string;
  /** JSON: the IdP's verified claims. */
  claims: string;
  created_at: string;
  last_seen_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
}

/** A login in progress (browser, CLI loopback or device), for at most a few minutes. */
export interface LoginTransactionTable {
  id: string;
  kind: 'browser' | 'cli' | 'device';
  provider: string;
  state: string | null;
  nonce: string | null;
  return_to: string | null;
  cli_redirect_uri: string | null;
  cli_code_challenge: string | null;
  cli_state: string | null;
  cli_code_hash: string | null;
  session_id: string | null;
  device_secret: string | null;
  created_at: string;
  expires_at: string;
}

/** The tables 0007-sessions adds to the store's `Database`. */
export interface SessionDatabase {
  sessions: SessionTable;
  login_transactions: LoginTransactionTable;
}
