import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { TesseraError } from '@tessera/core';
import type { JWK } from 'jose';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from './keys.js';

/** The only permission bits a key file may have: read and write for its owner. */
export const KEY_FILE_MODE = 0o600;

const KTY: Record<SigningAlgorithm, string> = { RS256: 'RSA', ES256: 'EC' };

/**
 * Reads a key file: a JSON Web Key Set of private keys (`{"keys": [...]}`, RFC 7517 §5).
 * Returns `undefined` when the file does not exist yet.
 *
 * @throws TesseraError `ERR_KEY_FILE_INSECURE` when group or others have any permission on it: the
 *   file holds private signing keys, and anyone who reads it can mint tokens for every deployment.
 * @throws TesseraError `ERR_KEY_FILE_INVALID` when it is not a key set Tessera wrote. The message
 *   never quotes the file's content.
 */
export async function readKeyFile(path: string): Promise<JWK[] | undefined> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TesseraError('ERR_KEY_FILE_INVALID', `cannot read the key file ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (!info.isFile()) throw new TesseraError('ERR_KEY_FILE_INVALID', `key file ${path} is not a regular file; point --key-file at a file`);
  assertPrivateMode(path, info.mode);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    // No excerpt of the content: it is private key material.
    throw new TesseraError(
      'ERR_KEY_FILE_INVALID',
      `key file ${path} is not valid JSON; restore it from a backup, or move it away to start with fresh keys (tokens signed by the old keys then stop verifying once they leave the JWKS)`,
      { cause: e instanceof Error ? new Error(e.name) : undefined },
    );
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) {
    throw new TesseraError('ERR_KEY_FILE_INVALID', `key file ${path} has no "keys" array; expected a JSON Web Key Set of private keys`);
  }
  return keys.map((k, i) => checkPrivateJwk(path, i, k));
}

/**
 * Writes a key file atomically (a temp file in the same directory, then rename) with mode 0600, so
 * no reader ever sees a partial file and no other user can read it, even for an instant.
 */
export async function writeKeyFile(path: string, keys: JWK[]): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(tmp, 'wx', KEY_FILE_MODE);
  try {
    await handle.writeFile(`${JSON.stringify({ keys }, null, 2)}\n`);
    await handle.sync();
    await handle.chmod(KEY_FILE_MODE);
  } catch (e) {
    await handle.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await handle.close();
  await rename(tmp, path);
}

function assertPrivateMode(path: string, mode: number): void {
  if (process.platform === 'win32') return;
  const perms = mode & 0o777;
  if ((perms & 0o077) !== 0) {
    throw new TesseraError(
      'ERR_KEY_FILE_INSECURE',
      `refusing to use key file ${path}: its mode is ${perms.toString(8).padStart(4, '0')}, so users other than its owner can read or change the private signing keys in it. Run \`chmod 600 ${path}\` and start again (if others may have read it, also run \`tessera keys rotate --revoke-current\`).`,
      { details: { path, mode: perms.toString(8).padStart(4, '0') } },
    );
  }
}

function checkPrivateJwk(path: string, index: number, value: unknown): JWK {
  const where = `key file ${path}, keys[${index}]`;
  if (!value || typeof value !== 'object') throw new TesseraError('ERR_KEY_FILE_INVALID', `${where} is not a JWK object`);
  const jwk = value as JWK;
  if (typeof jwk.kid !== 'string' || jwk.kid === '') throw new TesseraError('ERR_KEY_FILE_INVALID', `${where} has no "kid"`);
  if (!SIGNING_ALGORITHMS.includes(jwk.alg as SigningAlgorithm)) {
    throw new TesseraError('ERR_KEY_FILE_INVALID', `${where} (kid ${jwk.kid}): "alg" must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  }
  if (jwk.kty !== KTY[jwk.alg as SigningAlgorithm]) {
    throw new TesseraError(
      'ERR_KEY_FILE_INVALID',
      `${where} (kid ${jwk.kid}): "kty" must be ${KTY[jwk.alg as SigningAlgorithm]} for ${jwk.alg}`,
    );
  }
  if (typeof jwk.d !== 'string') {
    throw new TesseraError('ERR_KEY_FILE_INVALID', `${where} (kid ${jwk.kid}) holds no private key ("d" is missing)`);
  }
  return jwk;
}
