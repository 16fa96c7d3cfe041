-- streamedge: who reads what through Supabase, aligned with what the node's API serves
-- (docs/api.md). Replaces the read policies of 20261122000000_streamedge_init, which hid
-- the chat of paused and ended streams from buyers while the API serves it, hid deleted
-- messages from the stream's seller, and kept session summaries and viewer statistics
-- from signed-in users the API shows them to. A new file rather than an edit of the first
-- one: `streamedge migrate` and `supabase db push` record migrations by version and never
-- run one twice, so existing databases get this by running either of them again.
--
-- Who is who, as the node sees it (src/auth/principal.rs):
--   * "signed in": a Supabase user token that is not an anonymous sign-in. The node
--     refuses anon-key tokens and anonymous sign-ins (`is_anonymous: true`) unless
--     `auth.allow_anonymous_viewers` is on (off by default); a policy cannot read the
--     node's configuration, so here they are never signed in. Their Postgres roles:
--     `anon` (no privileges at all below) and `authenticated` with `is_anonymous` (no row
--     matches a policy).
--   * the seller of a stream: `streams.owner_id`, the `sub` of the token that created it.
--   * writers: only the node (the tables' owner) and `service_role`; both bypass RLS.
--     Every record comes from the node, so nobody else inserts, updates or deletes.

create schema if not exists streamedge;

-- The caller's user id when the API would serve them as signed in; null for anon-key
-- tokens and anonymous sign-ins. Reads the claims PostgREST sets for the request, as
-- Supabase's auth.uid() and auth.jwt() do. Not in an exposed schema (config.toml's
-- api.schemas), so it is no RPC endpoint.
create or replace function streamedge.api_user_id() returns text
  language sql stable
  set search_path = ''
as $$
  select case
    when (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb
            ->> 'is_anonymous') = 'true' then null
    else auth.uid()::text
  end
$$;
revoke all on function streamedge.api_user_id() from public;
grant usage on schema streamedge to authenticated;
grant execute on function streamedge.api_user_id() to authenticated;

-- Privileges: signed-in users may only read; anon nothing (the API answers an anon-key
-- token with 401, so a table error here rather than an empty list); the service role
-- everything. `revoke all` also takes the REFERENCES and TRIGGER privileges that
-- Supabase's default grants give and the first migration left in place.
revoke all on
  public.streams, public.stream_sessions, public.chat_messages,
  public.moderation_actions, public.viewer_stats
  from anon, authenticated;
grant select on
  public.streams, public.stream_sessions, public.chat_messages,
  public.moderation_actions, public.viewer_stats
  to authenticated;
grant all on
  public.streams, public.stream_sessions, public.chat_messages,
  public.moderation_actions, public.viewer_stats
  to service_role;

-- streams: every stream, in every state, to anyone signed in.
-- API: `GET /v1/streams/{id}` and `GET /v1/streams?state=idle|live|paused|ended` serve
-- any stream to any signed-in caller (the record column holds what those show: title,
-- owner, state, the current or last session, the transition counter).
drop policy if exists streams_read on public.streams;
create policy streams_read on public.streams
  for select to authenticated
  using ((select streamedge.api_user_id()) is not null);

-- chat_messages, two policies (a row is visible when either allows it):
-- 1. Undeleted messages of every stream, whatever its state, to anyone signed in.
--    API: `GET /v1/streams/{id}/messages` serves the history of a live, paused, ended or
--    idle stream to any signed-in caller (a banned user included: a ban stops sending,
--    RTC tokens and WHEP playback, not the history), and "deleted messages are gone",
--    for their author too.
drop policy if exists chat_messages_read on public.chat_messages;
create policy chat_messages_read on public.chat_messages
  for select to authenticated
  using (deleted_at is null and (select streamedge.api_user_id()) is not null);
-- 2. Every message of the caller's own streams, deleted ones included, to their seller.
--    API: the session export (`GET …/sessions/{id}/export`, the seller only) includes
--    deleted messages, marked. The stream row may arrive after its messages (records are
--    written asynchronously); until it does, its seller sees the undeleted ones only.
drop policy if exists chat_messages_seller_read on public.chat_messages;
create policy chat_messages_seller_read on public.chat_messages
  for select to authenticated
  using (
    exists (
      select 1 from public.streams s
      where s.id = chat_messages.stream_id
        and s.owner_id = (select streamedge.api_user_id())
    )
  );

-- stream_sessions: every session to anyone signed in.
-- API: `GET /v1/streams/{id}/sessions/{session_id}` serves any session's summary (times,
-- end reason, peak and unique viewers, chat count) to any signed-in caller, and
-- `GET /v1/streams/{id}` the current or last session; a row holds no more than that
-- (plus the chat sequence range, which the history already reveals).
drop policy if exists stream_sessions_owner_read on public.stream_sessions;
drop policy if exists stream_sessions_read on public.stream_sessions;
create policy stream_sessions_read on public.stream_sessions
  for select to authenticated
  using ((select streamedge.api_user_id()) is not null);

-- viewer_stats: every session's statistics to anyone signed in.
-- API: the same session summary and `GET /v1/streams/{id}` (`viewers.peak`,
-- `viewers.unique`) serve these figures to any signed-in caller. (Who is watching now,
-- `GET …/viewers`, is the seller's only; it is never written to PostgreSQL.)
drop policy if exists viewer_stats_owner_read on public.viewer_stats;
drop policy if exists viewer_stats_read on public.viewer_stats;
create policy viewer_stats_read on public.viewer_stats
  for select to authenticated
  using ((select streamedge.api_user_id()) is not null);

-- moderation_actions: the seller's own records only.
-- API: moderation is the seller's alone (`403 not_owner` for anyone else) and no endpoint
-- lists these records to others; a banned user learns only that they are banned (`403
-- banned`), and other viewers only that a message went away.
drop policy if exists moderation_actions_owner_read on public.moderation_actions;
create policy moderation_actions_owner_read on public.moderation_actions
  for select to authenticated
  using (owner_id = (select streamedge.api_user_id()));
