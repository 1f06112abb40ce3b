export * from './api.js';
export * from './claims.js';
export * from './client.js';
export * from './duration.js';
export * from './env.js';
export * from './errors.js';
export * from './redact.js';
export * from './states.js';
