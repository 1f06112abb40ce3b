import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

/** Options for {@link TestIssuer.mint}. */
export interface MintOptions {
  /** Lifetime, seconds; negative for an already expired token. @default 300 */
  expiresIn?: number;
  /** Sign with a key the issuer does not publish (a forged token). */
  foreignKey?: boolean;
  /** Override `iss` (a token claiming another issuer, signed with this one's key). */
  issuer?: string;
  /** @default 'JWT' */
  typ?: string;
  /** `iat` offset, seconds. @default 0 */
  iatOffset?: number;
}

/** A second, local OIDC issuer standing in for GitHub Actions, GitLab or a Kubernetes cluster. */
export interface TestIssuer {
  /** The issuer URL (`http://127.0.0.1:<port>`), exactly as its tokens' `iss`. */
  issuer: string;
  /** Signs a token with the issuer's published key. */
  mint(claims: JWTPayload, options?: MintOptions): Promise<string>;
  /** How many times the JWKS was fetched. */
  jwksFetches(): number;
  close(): Promise<void>;
}

/**
 * Claims shaped like a GitHub Actions OIDC token for `repository` at `ref`.
 * @see https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
 */
export function githubActionsClaims(options: { repository: string; ref?: string; aud: string; workflow?: string }): JWTPayload {
  const ref = options.ref ?? 'refs/heads/main';
  const [owner] = options.repository.split('/');
  const workflow = options.workflow ?? 'deploy.yml';
  return {
    sub: `repo:${options.repository}:ref:${ref}`,
    aud: options.aud,
    ref,
    ref_type: ref.startsWith('refs/tags/') ? 'tag' : 'branch',
    repository: options.repository,
    repository_owner: owner,
    repository_id: '123456789',
    repository_owner_id: '987654',
    repository_visibility: 'private',
    run_id: '6543210',
    run_number: '42',
    run_attempt: '1',
    actor: 'octocat',
    actor_id: '1',
    workflow: 'Deploy',
    workflow_ref: `${options.repository}/.github/workflows/${workflow}@${ref}`,
    job_workflow_ref: `${options.repository}/.github/workflows/${workflow}@${ref}`,
    event_name: 'push',
    environment: 'production',
    runner_environment: 'github-hosted',
    sha: 'a'.repeat(40),
  };
}

/** Claims shaped like a Kubernetes projected service-account token. */
export function kubernetesClaims(options: { namespace: string; serviceAccount: string; aud: string }): JWTPayload {
  return {
    sub: `system:serviceaccount:${options.namespace}:${options.serviceAccount}`,
    aud: [options.aud],
    'kubernetes.io': {
      namespace: options.namespace,
      serviceaccount: { name: options.serviceAccount, uid: randomUUID() },
      pod: { name: `${options.serviceAccount}-7c9f`, uid: randomUUID() },
    },
  };
}

/**
 * Starts an issuer on 127.0.0.1 (jose + node:http) serving a discovery document and a JWKS, and
 * minting RS256 tokens.
 */
export async function startTestIssuer(): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const foreign = await generateKeyPair('RS256');
  const kid = `test-${randomUUID().slice(0, 8)}`;
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  let fetches = 0;
  let issuer = '';
  const server: Server = createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/.well-known/jwks`, id_token_signing_alg_values_supported: ['RS256'] }));
    } else if (req.url === '/.well-known/jwks') {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    async mint(claims, options = {}) {
      const now = Math.floor(Date.now() / 1000) + (options.iatOffset ?? 0);
      const key: CryptoKey = options.foreignKey ? foreign.privateKey : privateKey;
      return new SignJWT({ jti: randomUUID(), ...claims })
        .setProtectedHeader({ alg: 'RS256', kid, typ: options.typ ?? 'JWT' })
        .setIssuer(options.issuer ?? issuer)
        .setIssuedAt(now)
        .setNotBefore(now - 5)
        .setExpirationTime(now + (options.expiresIn ?? 300))
        .sign(key);
    },
    jwksFetches: () => fetches,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
