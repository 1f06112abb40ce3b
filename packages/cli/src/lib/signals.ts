/**
 * Resolves on the first SIGINT or SIGTERM, so a long-running command can shut down gracefully.
 * A second signal while shutting down exits at once (status 130), for a stuck shutdown.
 */
export function waitForShutdownSignal(onSecond?: () => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received = false;
    const handler = (signal: NodeJS.Signals) => {
      if (received) {
        onSecond?.();
        process.exit(130);
      }
      received = true;
      resolve(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}
