import { readFile } from 'node:fs/promises';
import { ApiClient, type ErrorCode, JWT_TOKEN_TYPE, type OAuthTokenResponse, TesseraError, TOKEN_EXCHANGE_GRANT } from '@tessera/core';

/** Environment variable naming a platform token file to exchange (CI: `tessera deploy` with no stored secret). */
export const FEDERATED_TOKEN_FILE_ENV = 'TESSERA_FEDERATED_TOKEN_FILE';

/**
 * Exchanges the platform token in `file` (GitHub Actions, GitLab, a Kubernetes service account…)
 * for a short-lived Tessera access token at the server's token endpoint (RFC 8693).
 * @throws TesseraError with the server's reason (`ERR_POLICY_DENIED`, `ERR_AUDIENCE_MISMATCH`…), or
 *   `ERR_CONFIG` when the file cannot be read.
 */
export async function exchangeTokenFile(baseUrl: string, file: string): Promise<OAuthTokenResponse> {
  let subjectToken: string;
  try {
    subjectToken = (await readFile(file, 'utf8')).trim();
  } catch (e) {
    throw new TesseraError(
      'ERR_CONFIG',
      `cannot read the token file ${file} (${(e as NodeJS.ErrnoException).code ?? e}); check --token-file or ${FEDERATED_TOKEN_FILE_ENV}`,
      {
        cause: e,
      },
    );
  }
  if (subjectToken === '') throw new TesseraError('ERR_CONFIG', `the token file ${file} is empty`);
  let res: Response;
  try {
    res = await fetch(`${baseUrl.replace(/\/+$/, '')}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE_GRANT,
        subject_token: subjectToken,
        subject_token_type: JWT_TOKEN_TYPE,
      }).toString(),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    throw new TesseraError(
      'ERR_SERVER_UNREACHABLE',
      `cannot reach the Tessera server at ${baseUrl} to exchange the token (${(e as Error).message})`,
      { cause: e },
    );
  }
  const body = (await res.json().catch(() => ({}))) as Partial<OAuthTokenResponse> & { code?: string; error_description?: string };
  if (!res.ok || typeof body.access_token !== 'string') {
    throw new TesseraError(
      (body.code as ErrorCode) ?? 'ERR_HTTP',
      `token exchange refused: ${body.error_description ?? `HTTP ${res.status}`}`,
      { status: res.status },
    );
  }
  return body as OAuthTokenResponse;
}

/** An API client that sends the access token exchanged for `file`. */
export async function federatedClient(baseUrl: string, file: string): Promise<{ client: ApiClient; answer: OAuthTokenResponse }> {
  const answer = await exchangeTokenFile(baseUrl, file);
  return { client: new ApiClient({ baseUrl, token: answer.access_token }), answer };
}

/**
 * A token provider for {@link ApiClient}: exchanges the token file on first use and again a minute
 * before the access token expires (the file is re-read: CI platforms and Kubernetes rotate it).
 */
export function federatedTokenProvider(baseUrl: string, file: string): () => Promise<string> {
  let cached: { token: string; expiresAt: number } | undefined;
  return async () => {
    if (cached && cached.expiresAt - Date.now() > 60_000) return cached.token;
    const answer = await exchangeTokenFile(baseUrl, file);
    cached = { token: answer.access_token, expiresAt: Date.now() + answer.expires_in * 1000 };
    return cached.token;
  };
}
