// Read on the server at request time (not inlined at build time), so one build runs against
// any Celeste Connect: the demo on a random port in tests, the production service in prod.

export type AuthConfig =
  | { mode: 'supabase'; url: string; anonKey: string }
  /** Local mode: no Supabase project; users sign in through the Celeste Connect demo. */
  | { mode: 'demo' };

export interface AppConfig {
  connectUrl: string;
  auth: AuthConfig;
}

export function readConfig(): AppConfig {
  const env = process.env;
  const connectUrl = env.CONNECT_URL || 'http://127.0.0.1:8080';
  const url = env.SUPABASE_URL;
  const anonKey = env.SUPABASE_ANON_KEY;
  return { connectUrl, auth: url && anonKey ? { mode: 'supabase', url, anonKey } : { mode: 'demo' } };
}
