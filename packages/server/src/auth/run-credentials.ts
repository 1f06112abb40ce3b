import { RUN_CREDENTIAL_PREFIX } from '@tessera/core';
import type { FastifyRequest } from 'fastify';
import type { CredentialService, RunCredentialPrincipal } from '../services/credentials.js';
import { type Authenticator, bearerToken, type Principal } from './principal.js';

/**
 * For one route, a lookup that checks the credential and reads what the handler needs in one statement
 * (the token endpoint: the credential and the run it is for), leaving the read on the request.
 */
export interface CredentialPreload {
  /** The route's URL, as registered (`request.routeOptions.url`). */
  url: string;
  /** Checks `credential` as {@link CredentialService.authenticate} does, and returns what it read too. */
  read(credential: string): Promise<{ principal: RunCredentialPrincipal; preloaded: unknown }>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** What a {@link CredentialPreload} read with the credential, for the route's handler. */
    preloaded?: unknown;
  }
}

/** Run credentials (`Authorization: Bearer tsr_…`): the flow process acting for its own run. */
export class RunCredentialAuthenticator implements Authenticator {
  readonly name = 'run-credential';
  constructor(
    private readonly credentials: CredentialService,
    private readonly preload?: CredentialPreload,
  ) {}

  async authenticate(request: FastifyRequest): Promise<Principal | undefined> {
    const token = bearerToken(request);
    if (!token?.startsWith(RUN_CREDENTIAL_PREFIX)) return undefined;
    if (this.preload && request.routeOptions.url === this.preload.url && request.method === 'POST') {
      const { principal, preloaded } = await this.preload.read(token);
      request.preloaded = preloaded;
      return { kind: 'run', run: principal };
    }
    return { kind: 'run', run: await this.credentials.authenticate(token) };
  }
}
