import { InvalidArgumentError } from 'commander';

/** Commander parser for a non-negative integer option. */
export function parseIntOption(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}, found ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
}

/** Commander parser for a port number (0 picks a free port). */
export const parsePort = parseIntOption('port', 0, 65535);

/** Renders an "Examples:" help section. */
export function examples(...lines: [command: string, comment?: string][]): string {
  const width = Math.max(...lines.map(([c]) => c.length));
  return `\nExamples:\n${lines.map(([c, comment]) => `  $ ${comment ? c.padEnd(width) : c}${comment ? `   # ${comment}` : ''}`).join('\n')}\n`;
}
