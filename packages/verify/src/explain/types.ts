/**
 * The shapes `explain`, `lint` and `generate` share: a decoded token, one check, one verdict.
 * Everything here is data: evaluators are pure functions over a token, a relying party's
 * configuration and a clock, so the same question always gets the same answer.
 */

/** The relying parties `explain`, `lint` and `generate` know. */
export type ExplainTarget = 'generic' | 'aws' | 'gcp' | 'azure' | 'vault';

/** Every {@link ExplainTarget}, in display order. */
export const EXPLAIN_TARGETS: readonly ExplainTarget[] = ['generic', 'aws', 'gcp', 'azure', 'vault'];

/** A token as the relying party sees it after decoding (never the compact string). */
export interface DecodedToken {
  /** The JOSE protected header (`alg`, `typ`, `kid`…). */
  header: Record<string, unknown>;
  /** The claims set. */
  claims: Record<string, unknown>;
}

/** One step of a relying party's decision. */
export interface ExplainCheck {
  /**
   * Stable identifier of the kind of check (`issuer`, `audience`, `expiry`, `aws.condition`…).
   * Several checks may share an id (one per condition, say); tools branch on it, never on `message`.
   */
  id: string;
  /** Whether this step lets the token through. */
  ok: boolean;
  /** One line: what was checked and against what. */
  message: string;
  /** Why it failed (or what to watch), with the token's actual value. */
  detail?: string;
  /**
   * `warning`: passes, but only by an edge case or with a risk worth fixing;
   * `unknown`: could not be simulated faithfully (the verdict is then `indeterminate`).
   */
  flag?: 'warning' | 'unknown';
  /** When this check fails: what the relying party answers, word for word where it is known. */
  answer?: string;
}

/** The outcome of {@link ExplainCheck}s, in the relying party's own evaluation order. */
export interface ExplainResult {
  target: ExplainTarget;
  /** `indeterminate`: nothing failed, but something could not be simulated. */
  verdict: 'accepted' | 'refused' | 'indeterminate';
  checks: ExplainCheck[];
  /** When refused: what the relying party would answer (its error string for the first failure). */
  answer?: string;
}

/** Options every evaluator accepts. */
export interface ExplainOptions {
  /** The instant to judge the token at. @default new Date() */
  now?: Date;
}

/** Builds an {@link ExplainResult} from checks in evaluation order. */
export function verdictOf(target: ExplainTarget, checks: ExplainCheck[]): ExplainResult {
  const failed = checks.find((c) => !c.ok);
  if (failed) {
    return { target, verdict: 'refused', checks, ...(failed.answer !== undefined ? { answer: failed.answer } : {}) };
  }
  return { target, verdict: checks.some((c) => c.flag === 'unknown') ? 'indeterminate' : 'accepted', checks };
}
