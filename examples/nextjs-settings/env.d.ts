// Next.js inlines NEXT_PUBLIC_* variables at build time; this declaration keeps the type-check
// free of @types/node (and of Next itself). Inside a real Next.js app, next-env.d.ts and
// @types/node provide it and this file can go.
declare const process: { env: Record<string, string | undefined> };
