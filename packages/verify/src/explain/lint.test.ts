import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseTrustConfig } from './detect.js';
import { LINT_RULES, type LintRuleId, lintTrustConfig } from './lint.js';

const ISSUER = 'https://tessera.example.com';

/** The fixture for a finding id: `fixtures/lint/<id>.json` (or `.json.txt` when the JSON is deliberately odd). */
function lintFixture(id: string): { raw: unknown; source: string } {
  const json = new URL(`./fixtures/lint/${id}.json`, import.meta.url);
  const url = existsSync(json) ? json : new URL(`./fixtures/lint/${id}.json.txt`, import.meta.url);
  const source = readFileSync(url, 'utf8');
  return { raw: JSON.parse(source), source };
}

function lintFile(name: string, pick?: (raw: Record<string, unknown>) => unknown) {
  const source = readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
  const raw = JSON.parse(source) as Record<string, unknown>;
  return lintTrustConfig(parseTrustConfig(pick ? pick(raw) : raw, 'auto'), { issuer: ISSUER });
}

describe('lintTrustConfig', () => {
  for (const id of Object.keys(LINT_RULES) as LintRuleId[]) {
    it(`finds ${id} (${LINT_RULES[id].severity})`, () => {
      const { raw, source } = lintFixture(id);
      const findings = lintTrustConfig(parseTrustConfig(raw, 'auto', { source }), { issuer: ISSUER, source });
      const f = findings.find((x) => x.id === id);
      expect(f, JSON.stringify(findings, null, 2)).toBeDefined();
      expect(f?.severity).toBe(LINT_RULES[id].severity);
      expect(f?.fix.length).toBeGreaterThan(5);
    });
  }

  it('passes the well-pinned fixtures of every target', () => {
    expect(lintFile('aws-trust.json')).toEqual([]);
    expect(lintFile('gcp-provider.json')).toEqual([]);
    expect(lintFile('azure-credential.json')).toEqual([]);
    expect(lintFile('vault-role.json')).toEqual([]);
  });

  it('names the wildcard and where it is', () => {
    const { raw } = lintFixture('sub-wildcard-deployment');
    const [f] = lintTrustConfig(parseTrustConfig(raw)).filter((x) => x.id === 'sub-wildcard-deployment');
    expect(f).toMatchObject({
      message: 'sub pattern "ws:default:deployment:*" matches other deployments of the workspace',
      path: 'Statement[0].Condition.StringLike.tessera.example.com:sub',
    });
  });

  it('reads sub patterns out of GCP conditions (startsWith, matches)', () => {
    const base = {
      name: 'projects/1/locations/global/workloadIdentityPools/p/providers/q',
      oidc: { issuerUri: ISSUER },
      attributeMapping: { 'google.subject': 'assertion.sub' },
    };
    const starts = lintTrustConfig(parseTrustConfig({ ...base, attributeCondition: 'assertion.sub.startsWith("ws:default:")' }));
    expect(starts.map((f) => f.id)).toContain('sub-wildcard-deployment');
    const anyWs = lintTrustConfig(
      parseTrustConfig({ ...base, attributeCondition: "assertion.sub.matches('^ws:[^:]+:deployment:etl:env:prod$')" }),
    );
    expect(anyWs.map((f) => f.id)).toContain('sub-wildcard-workspace');
    const noSub = lintTrustConfig(parseTrustConfig({ ...base, attributeCondition: 'assertion.environment == "prod"' }));
    expect(noSub.map((f) => f.id)).toContain('sub-not-pinned');
  });

  it('compares the issuer with the server’s when it is known', () => {
    const f = lintTrustConfig(
      parseTrustConfig({ issuer: 'https://tessera.example.org', subject: 'x', audiences: ['api://AzureADTokenExchange'] }),
      { issuer: ISSUER },
    );
    expect(f[0]).toMatchObject({ id: 'issuer-typo', message: expect.stringContaining('another host') });
  });

  it('orders findings errors first', () => {
    const { raw } = lintFixture('aws-string-like-no-wildcard');
    const findings = lintTrustConfig(
      parseTrustConfig({ ...(raw as object), Statement: [{ ...(raw as { Statement: object[] }).Statement[0], Principal: '*' }] }),
    );
    expect(findings.map((f) => f.severity)).toEqual(
      [...findings.map((f) => f.severity)].sort(
        (a, b) => ['error', 'warning', 'info'].indexOf(a) - ['error', 'warning', 'info'].indexOf(b),
      ),
    );
  });
});
