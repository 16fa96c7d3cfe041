-- streamedge: the durable records of live shopping streams.
--
-- Written only by streamedge nodes (connected as the database owner or service_role, which
-- bypass Row Level Security); read by apps through Supabase with the policies below.
-- Records arrive asynchronously and possibly out of order (several nodes write batches in
-- parallel), so tables have natural keys and no foreign keys between them, and every write
-- is an idempotent insert or a version-guarded upsert.

create table if not exists public.streams (
  id          uuid primary key,
  owner_id    text not null,
  title       text not null,
  state       text not null check (state in ('idle', 'live', 'paused', 'ended')),
  -- Transitions so far; an upsert only replaces a row with a smaller version.
  version     bigint not null default 0,
  created_at  timestamptz not null,
  updated_at  timestamptz not null,
  -- The node's whole stream record, used to restore the shared state.
  record      jsonb not null
);
create index if not exists streams_state_created_idx on public.streams (state, created_at desc);
create index if not exists streams_owner_created_idx on public.streams (owner_id, created_at desc);

create table if not exists public.stream_sessions (
  id              uuid primary key,
  stream_id       uuid not null,
  owner_id        text not null,
  state           text not null,
  started_at      timestamptz not null,
  ended_at        timestamptz,
  end_reason      text,
  live_ms         bigint not null default 0,
  paused_ms       bigint not null default 0,
  chat_seq_start  bigint not null default 0,
  chat_seq_end    bigint,
  -- The stream's version when this row was written (upserts keep the newest).
  version         bigint not null default 0,
  -- The summary computed when the session ended (peak and unique viewers, chat count).
  summary         jsonb
);
create index if not exists stream_sessions_stream_idx on public.stream_sessions (stream_id, started_at desc);
create index if not exists stream_sessions_owner_idx on public.stream_sessions (owner_id, started_at desc);

create table if not exists public.chat_messages (
  stream_id      uuid not null,
  seq            bigint not null,
  id             uuid not null,
  user_id        text not null,
  body           text not null,
  client_msg_id  text not null,
  sent_at        timestamptz not null,
  -- Set when the stream's owner deleted the message (kept for the moderation record).
  deleted_at     timestamptz,
  -- When the row was written (persistence lag = persisted_at - sent_at).
  persisted_at   timestamptz not null default now(),
  -- One message per sequence number of a stream; the key also serves paging by seq.
  primary key (stream_id, seq)
);

create table if not exists public.moderation_actions (
  id              uuid primary key,
  stream_id       uuid not null,
  owner_id        text not null,
  actor_id        text not null,
  action          text not null check (action in ('delete_message', 'ban', 'unban', 'slow_mode')),
  target_user_id  text,
  target_seq      bigint,
  -- For a timeout: when it ends. Null for a ban until lifted.
  expires_at      timestamptz,
  detail          jsonb not null default '{}'::jsonb,
  created_at      timestamptz not null
);
create index if not exists moderation_actions_stream_idx
  on public.moderation_actions (stream_id, target_user_id, created_at desc);

create table if not exists public.viewer_stats (
  session_id      uuid primary key,
  stream_id       uuid not null,
  owner_id        text not null,
  peak_viewers    bigint not null,
  unique_viewers  bigint not null,
  chat_messages   bigint not null,
  duration_ms     bigint not null,
  recorded_at     timestamptz not null
);
create index if not exists viewer_stats_owner_idx on public.viewer_stats (owner_id, recorded_at desc);

-- Note: the privileges and read policies below were replaced by
-- 20261130000000_read_policies_match_the_api.sql (this file is left as it was applied).
--
-- Row Level Security: on for every table. Without a policy nothing is visible or writable;
-- the policies below only ever allow reading, so only the service role (and the owner of
-- the tables, which streamedge connects as) can write.
alter table public.streams enable row level security;
alter table public.stream_sessions enable row level security;
alter table public.chat_messages enable row level security;
alter table public.moderation_actions enable row level security;
alter table public.viewer_stats enable row level security;

revoke insert, update, delete, truncate on
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

-- Anyone signed in sees live streams; sellers also see their own in any state.
create policy streams_read on public.streams
  for select to authenticated
  using (state = 'live' or owner_id = (select auth.uid())::text);

-- Anyone signed in reads the chat of live streams (deleted messages hidden); sellers read
-- their own streams' chat in any state.
create policy chat_messages_read on public.chat_messages
  for select to authenticated
  using (
    deleted_at is null
    and exists (
      select 1 from public.streams s
      where s.id = chat_messages.stream_id
        and (s.state = 'live' or s.owner_id = (select auth.uid())::text)
    )
  );

-- Sellers read their own sessions, statistics and moderation records.
create policy stream_sessions_owner_read on public.stream_sessions
  for select to authenticated
  using (owner_id = (select auth.uid())::text);

create policy viewer_stats_owner_read on public.viewer_stats
  for select to authenticated
  using (owner_id = (select auth.uid())::text);

create policy moderation_actions_owner_read on public.moderation_actions
  for select to authenticated
  using (owner_id = (select auth.uid())::text);
