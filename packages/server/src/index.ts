export { buildApp } from './app.js';
export { type LoginOptions, LoginService, type OidcProviderOptions } from './auth/oidc-login.js';
export type { AuthOptions } from './auth/options.js';
export {
  type Authenticator,
  AuthRegistry,
  type Principal,
  ROLES,
  type Role,
  type RoleGrant,
  type RoleRule,
  requireRole,
  roleRules,
} from './auth/principal.js';
export { DEFAULT_SESSION_SETTINGS, type SessionSettings, type SessionSettingsOptions } from './auth/sessions.js';
export type { Clock } from './lib/clock.js';
export { type Access, type RouteAccess, routeTable } from './routes/route.js';
export { type RunningServer, resolveHome, type ServerOptions, startServer } from './server.js';
export { DEFAULT_SETTINGS, type OrchestrationSettings } from './services/context.js';
export { Services } from './services/index.js';
export { DEFAULT_KEY_SETTINGS, JWKS_MAX_AGE_MS, type KeySettings, type KeySettingsOptions } from './services/keys.js';
export { type OpenedStore, openStore, type StoreDialect } from './store/dialect.js';
export { migrateToLatest } from './store/migrate.js';
