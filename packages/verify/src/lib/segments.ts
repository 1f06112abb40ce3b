import type { VerificationErrorCode } from '@tessera/core';
import { VerificationError } from '../errors.js';
import { parseStrictJson, StrictJsonError } from './json.js';

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** True when `s` uses only the base64url alphabet, unpadded (RFC 7515 §2). */
export function isBase64url(s: string): boolean {
  // A length of 1 mod 4 is never valid base64 (6 bits cannot make a byte).
  return BASE64URL.test(s) && s.length % 4 !== 1;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes a base64url JOSE segment (or already-decoded bytes) into a JSON object: valid UTF-8,
 * strict JSON without duplicate members, and an object at the top.
 * @throws {VerificationError} `duplicateCode` for a duplicate member, else `code`
 */
export function decodeSegment(
  segment: string,
  what: string,
  code: VerificationErrorCode,
  bytes?: Uint8Array,
  duplicateCode: VerificationErrorCode = 'ERR_DUPLICATE_MEMBER',
): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(bytes ?? Buffer.from(segment, 'base64url'));
  } catch (e) {
    throw new VerificationError(code, `the ${what} is not valid UTF-8`, { cause: e });
  }
  let value: unknown;
  try {
    value = parseStrictJson(text);
  } catch (e) {
    if (e instanceof StrictJsonError && e.duplicate) {
      throw new VerificationError(
        duplicateCode,
        `the ${what} has a member name twice; parsers disagree on which one wins, so it is refused`,
        { cause: e },
      );
    }
    throw new VerificationError(code, `the ${what} is not JSON`, { cause: e });
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new VerificationError(code, `the ${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}
