import { RUN_TOKEN_CLAIM_NAMES } from '@tessera/core';
import { CelError, type CompiledCel, compileCel } from './cel.js';
import { VerificationError } from './errors.js';

/**
 * A policy rule: a CEL condition over the token's claims, optionally named (the name appears in
 * denial messages and logs). A bare string is a rule named after its position (`allow[0]`).
 *
 * @example { name: 'prod-deployments', condition: 'environment == "prod" && glob("ws:acme:*", sub)' }
 */
export type PolicyRule = string | { name?: string; condition: string };

/**
 * Which verified tokens this service accepts, beyond issuer, audience and signature.
 * Deny wins: a token matching any `deny` rule is refused; otherwise, when `allow` is given, it must
 * match at least one `allow` rule. Rules are compiled when the verifier is created, so a bad
 * expression fails at startup.
 *
 * Each rule sees every claim as a variable (`sub`, `aud`, `run_id`, `run_attempt`, `environment`,
 * `deployment`, `tags`, `task`, `cnf`, …; an optional claim the token lacks is `null`) and the whole
 * claim set as `claims` (for other claims: `claims["https://aws.amazon.com/tags"]`). Functions: CEL's
 * standard ones and `glob(pattern, value)` (`*` and `?`); `matches()` is disabled (see cel.ts).
 *
 * A rule whose evaluation fails (e.g. `claims.foo` on a token without `foo`) does not grant access
 * when it is an allow rule, and denies when it is a deny rule: failures fail closed.
 */
export interface PolicyOptions {
  /** At least one must match. Omit to accept every token that passes the other checks. */
  allow?: PolicyRule[];
  /** None may match. */
  deny?: PolicyRule[];
}

/** Claim names offered as variables; absent ones are `null` so rules need no `has()` for them. */
export const POLICY_VARIABLES = RUN_TOKEN_CLAIM_NAMES.filter((c) => /^[a-z_]+$/.test(c));

const CLAIM_VARIABLES: ReadonlySet<string> = new Set(POLICY_VARIABLES);

interface CompiledRule {
  name: string;
  program: CompiledCel;
}

/** A compiled policy. */
export interface CompiledPolicy {
  /**
   * Throws `ERR_POLICY_DENIED` naming the deciding rule (deny) or the rule set (no allow matched).
   * @throws {VerificationError}
   */
  check(claims: Record<string, unknown>): void;
}

function compileRules(kind: 'allow' | 'deny', rules: PolicyRule[] | undefined): CompiledRule[] | undefined {
  if (rules === undefined) return undefined;
  if (!Array.isArray(rules)) throw new TypeError(`policy.${kind} must be an array of rules`);
  if (kind === 'allow' && rules.length === 0) {
    throw new TypeError('policy.allow is empty, which would refuse every token: omit it to allow all, or add a rule');
  }
  const names = new Set<string>();
  return rules.map((rule, i) => {
    const condition = typeof rule === 'string' ? rule : rule?.condition;
    const name = typeof rule === 'string' || rule?.name === undefined ? `${kind}[${i}]` : rule.name;
    if (typeof condition !== 'string') throw new TypeError(`policy.${kind}[${i}]: a rule is a CEL string or { name, condition }`);
    if (names.has(name)) throw new TypeError(`policy.${kind}: two rules are named "${name}"`);
    names.add(name);
    try {
      return { name, program: compileCel(condition, { variables: [...POLICY_VARIABLES, 'claims'] }) };
    } catch (e) {
      if (e instanceof CelError) {
        throw new CelError('ERR_CEL_INVALID', condition, `${e.message} — in policy.${kind} rule "${name}"`, { cause: e });
      }
      throw e;
    }
  });
}

/**
 * Compiles `allow`/`deny` rules once.
 * @throws {CelError} `ERR_CEL_INVALID` for a rule that does not compile, naming the rule
 * @throws {TypeError} for a malformed option (empty `allow`, duplicate names)
 */
export function compilePolicy(options: PolicyOptions): CompiledPolicy {
  const allow = compileRules('allow', options.allow);
  const deny = compileRules('deny', options.deny) ?? [];
  // Build each evaluation's context from only the claims the rules reference: copying every claim
  // per request cost more than evaluating the rules.
  const used = new Set<string>();
  for (const rule of [...(allow ?? []), ...deny]) for (const name of rule.program.references) if (CLAIM_VARIABLES.has(name)) used.add(name);
  const names = [...used];
  return {
    check(claims) {
      const vars: Record<string, unknown> = { claims };
      for (const name of names) vars[name] = Object.hasOwn(claims, name) ? claims[name] : null;
      for (const rule of deny) {
        let hit: boolean;
        let failure = '';
        try {
          hit = rule.program.evaluate(vars) === true;
        } catch (e) {
          hit = true;
          failure = ` (its condition could not be evaluated, which counts as a match: ${(e as Error).message})`;
        }
        if (hit) {
          throw new VerificationError(
            'ERR_POLICY_DENIED',
            `deny rule "${rule.name}" matched${failure}: ${rule.program.expression}; token sub ${JSON.stringify(claims.sub)}`,
            { rule: rule.name },
          );
        }
      }
      if (!allow) return;
      const failures: string[] = [];
      for (const rule of allow) {
        try {
          if (rule.program.evaluate(vars) === true) return;
        } catch (e) {
          failures.push(`"${rule.name}" could not be evaluated: ${(e as Error).message}`);
        }
      }
      throw new VerificationError(
        'ERR_POLICY_DENIED',
        `no allow rule matched (allow: ${allow.map((r) => `"${r.name}"`).join(', ')})${failures.length ? `; ${failures.join('; ')}` : ''}; token sub ${JSON.stringify(claims.sub)}`,
        { rule: 'allow' },
      );
    },
  };
}
