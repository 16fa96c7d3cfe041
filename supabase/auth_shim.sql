-- The pieces of Supabase that streamedge's migrations rely on, for a plain PostgreSQL
-- (development and tests): the anon / authenticated / service_role roles and auth.uid()
-- reading the request's JWT claims the way PostgREST sets them. Do NOT apply this to a
-- Supabase project, which has the real ones. `streamedge migrate --auth-shim` applies it
-- only when the auth schema is missing. It is not in migrations/ because the Supabase CLI
-- applies every file there (`supabase db push`, `supabase start`).
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;

create or replace function auth.uid() returns uuid
  language sql stable
as $$
  select nullif(
    coalesce(
      current_setting('request.jwt.claim.sub', true),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    ),
    ''
  )::uuid
$$;

-- Supabase grants table privileges in public to these roles by default; RLS is the guard.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
