import { describe, expect, it } from 'vitest';
import { explainToken, parseTrustConfig } from './detect.js';
import { generateTrustConfig, shellQuote, type TrustDeployment } from './generate.js';
import { lintTrustConfig } from './lint.js';
import type { DecodedToken } from './types.js';

const ISSUER = 'https://tessera.example.com';
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const ETL: TrustDeployment = {
  name: 'nightly-etl',
  id: '7d1c2a4e-0b1f-4c55-9a7e-3f1e2d4c5b6a',
  environment: 'prod',
  audiences: [
    'sts.amazonaws.com',
    'api://AzureADTokenExchange',
    'vault.internal',
    'https://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/tessera/providers/tessera',
  ],
};
const subOf = (d: { name: string; environment: string }) => `ws:default:deployment:${d.name}:env:${d.environment}`;

function tokenOf(d: TrustDeployment, aud: string): DecodedToken {
  return {
    header: { alg: 'RS256', typ: 'JWT', kid: 'k' },
    claims: {
      iss: ISSUER,
      sub: subOf(d),
      aud,
      iat: T - 10,
      nbf: T - 40,
      exp: T + 290,
      deployment: d.name,
      deployment_id: d.id,
      environment: d.environment,
      workspace: 'default',
    },
  };
}

const OPTIONS = {
  aws: { accountId: '123456789012' },
  gcp: { projectNumber: '123456789', pool: 'tessera', provider: 'tessera', serviceAccount: 'etl@proj.iam.gserviceaccount.com' },
  azure: { clientId: '00000000-0000-0000-0000-000000000001' },
  vault: { role: 'nightly-etl' },
} as const;

describe('generateTrustConfig', () => {
  for (const target of ['aws', 'gcp', 'azure', 'vault'] as const) {
    it(`${target}: accepts its own deployment, refuses another one and a renamed twin, and lints clean`, () => {
      const g = generateTrustConfig({ target, issuer: ISSUER, subject: subOf(ETL), deployment: ETL, ...OPTIONS });
      const trust = parseTrustConfig(JSON.parse(JSON.stringify(g.config)), 'auto');
      expect(trust.target).toBe(target);
      const own = explainToken(tokenOf(ETL, g.audience), trust, { now: NOW });
      expect(own.verdict, JSON.stringify(own.checks, null, 2)).toBe('accepted');
      const other = { ...ETL, name: 'reports', id: '11111111-2222-4333-8444-555555555555' };
      expect(explainToken(tokenOf(other, g.audience), trust, { now: NOW }).verdict).toBe('refused');
      // A deployment recreated under the same name gets a new id: GCP and Vault still refuse it.
      const twin = { ...ETL, id: '99999999-2222-4333-8444-555555555555' };
      expect(explainToken(tokenOf(twin, g.audience), trust, { now: NOW }).verdict).toBe(
        target === 'gcp' || target === 'vault' ? 'refused' : 'accepted',
      );
      expect(lintTrustConfig(trust, { issuer: ISSUER })).toEqual([]);
      expect(g.commands.join('\n')).toMatch(
        {
          aws: /aws iam create-open-id-connect-provider --url https:\/\/tessera.example.com --client-id-list sts.amazonaws.com/,
          gcp: /providers create-oidc tessera/,
          azure: /az ad app federated-credential create/,
          vault: /vault write auth\/jwt\/role\/nightly-etl -/,
        }[target],
      );
    });
  }

  it('aws: pins aud and sub with StringEquals, and allows TagSession only when tokens carry tags', () => {
    const g = generateTrustConfig({
      target: 'aws',
      issuer: ISSUER,
      subject: subOf(ETL),
      deployment: ETL,
      aws: { accountId: '123456789012' },
    });
    expect(g.config).toMatchObject({
      Statement: [
        {
          Effect: 'Allow',
          Principal: { Federated: 'arn:aws:iam::123456789012:oidc-provider/tessera.example.com' },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: { StringEquals: { 'tessera.example.com:aud': 'sts.amazonaws.com', 'tessera.example.com:sub': subOf(ETL) } },
        },
      ],
    });
    const tagged = generateTrustConfig({
      target: 'aws',
      issuer: ISSUER,
      subject: subOf(ETL),
      deployment: { ...ETL, awsSessionTags: true },
      aws: { accountId: '123456789012' },
    });
    expect((tagged.config.Statement as { Action: string[] }[])[0]?.Action).toEqual(['sts:AssumeRoleWithWebIdentity', 'sts:TagSession']);
  });

  it('gcp: default audience when the deployment allows it; otherwise allowedAudiences', () => {
    const g = generateTrustConfig({ target: 'gcp', issuer: ISSUER, subject: subOf(ETL), deployment: ETL, gcp: OPTIONS.gcp });
    expect(g.config.oidc).toEqual({ issuerUri: ISSUER, allowedAudiences: [] });
    const custom = generateTrustConfig({
      target: 'gcp',
      issuer: ISSUER,
      subject: subOf(ETL),
      deployment: ETL,
      audience: 'gcp.tessera',
      gcp: OPTIONS.gcp,
    });
    expect(custom.config.oidc).toEqual({ issuerUri: ISSUER, allowedAudiences: ['gcp.tessera'] });
    expect(custom.notes.join('\n')).toContain('does not allow audience "gcp.tessera"');
  });

  it('says what to fix: a missing flag, an http issuer, an audience the deployment does not allow', () => {
    expect(() => generateTrustConfig({ target: 'aws', issuer: ISSUER, subject: subOf(ETL), deployment: ETL })).toThrow(
      '--account-id is required for --target aws',
    );
    expect(() =>
      generateTrustConfig({
        target: 'vault',
        issuer: ISSUER,
        subject: subOf(ETL),
        deployment: { ...ETL, audiences: ['sts.amazonaws.com'] },
      }),
    ).toThrow(/--audience is required/);
    const http = generateTrustConfig({
      target: 'aws',
      issuer: 'http://127.0.0.1:4200',
      subject: subOf(ETL),
      deployment: { ...ETL, audiences: [] },
      aws: { accountId: '123456789012' },
    });
    expect(http.notes.join('\n')).toMatch(/not https/);
    expect(http.notes.join('\n')).toContain('does not allow audience "sts.amazonaws.com"');
  });

  it('quotes shell arguments', () => {
    expect(shellQuote('sts.amazonaws.com')).toBe('sts.amazonaws.com');
    expect(shellQuote('assertion.sub == "x" && y')).toBe(`'assertion.sub == "x" && y'`);
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });
});
