export { buildApp } from './app.js';
export type { Clock } from './lib/clock.js';
export { type RunningServer, resolveHome, type ServerOptions, startServer } from './server.js';
export { DEFAULT_SETTINGS, type OrchestrationSettings } from './services/context.js';
export { Services } from './services/index.js';
export { DEFAULT_KEY_SETTINGS, JWKS_MAX_AGE_MS, type KeySettings, type KeySettingsOptions } from './services/keys.js';
export { type OpenedStore, openStore, type StoreDialect } from './store/dialect.js';
export { migrateToLatest } from './store/migrate.js';
