/** A clock tests move by hand. */
export interface FakeClock {
  now(): number;
  set(ms: number | string | Date): void;
  advance(ms: number): void;
}

export function createFakeClock(start: number | string | Date = '2026-11-28T12:00:00Z'): FakeClock {
  let t = new Date(start).getTime();
  return {
    now: () => t,
    set: (ms) => {
      t = new Date(ms).getTime();
    },
    advance: (ms) => {
      t += ms;
    },
  };
}
