// The seed's useAuth: the current user, kept up to date (Supabase, or the demo in local mode).
'use client';

import { useEffect, useState } from 'react';

import type { AppAuth, AppUser } from '../lib/auth';

export function useAuth(auth: AppAuth): { user: AppUser | null; loading: boolean } {
  const [user, setUser] = useState<AppUser | null>(null);
  const [loading, setLoading] = useState(true);

  useEffect(() => {
    let active = true;
    auth.currentUser().then((current) => {
      if (!active) return;
      setUser(current);
      setLoading(false);
    });
    const stop = auth.onChange((next) => {
      setUser(next);
      setLoading(false);
    });
    return () => {
      active = false;
      stop();
    };
  }, [auth]);

  return { user, loading };
}
