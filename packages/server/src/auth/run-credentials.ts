import { RUN_CREDENTIAL_PREFIX } from '@tessera/core';
import type { FastifyRequest } from 'fastify';
import type { CredentialService } from '../services/credentials.js';
import { type Authenticator, bearerToken, type Principal } from './principal.js';

/** Run credentials (`Authorization: Bearer tsr_…`): the flow process acting for its own run. */
export class RunCredentialAuthenticator implements Authenticator {
  readonly name = 'run-credential';
  constructor(private readonly credentials: CredentialService) {}

  async authenticate(request: FastifyRequest): Promise<Principal | undefined> {
    const token = bearerToken(request);
    if (!token?.startsWith(RUN_CREDENTIAL_PREFIX)) return undefined;
    return { kind: 'run', run: await this.credentials.authenticate(token) };
  }
}
