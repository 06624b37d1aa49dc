/**
 * Schema migrations, identical on PostgreSQL and PGlite. Append new ones; never edit a released migration.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const m0001 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // The append-only log. `tx` is the writing transaction's id: readers order by (tx, position) and read only
  // below the oldest in-flight transaction, so an event committed out of position order is never skipped.
  yield* sql`CREATE TABLE tl_log (
    position bigserial PRIMARY KEY,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind text NOT NULL,
    event_id text NOT NULL,
    event_name text NOT NULL,
    routable boolean NOT NULL,
    partition_key integer NOT NULL,
    person_key text NOT NULL,
    dedup_key text NOT NULL,
    duplicate_of text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    contract_version smallint NOT NULL,
    body jsonb NOT NULL
  )`
  yield* sql`CREATE UNIQUE INDEX tl_log_event_id ON tl_log (event_id) WHERE kind = 'track'`
  yield* sql`CREATE INDEX tl_log_order ON tl_log (tx, position)`
  yield* sql`CREATE INDEX tl_log_received ON tl_log (received_at)`

  // One row per destination instance: where its subscription stands in the log.
  yield* sql`CREATE TABLE tl_subscriptions (
    destination text PRIMARY KEY,
    plugin text NOT NULL,
    cursor_tx xid8 NOT NULL,
    cursor_pos bigint NOT NULL,
    start_tx xid8 NOT NULL,
    start_pos bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`

  // The transformed payload, once per (destination, event). Never holds secrets; PII only hashed.
  yield* sql`CREATE TABLE tl_delivery_payloads (
    destination text NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL,
    dedup_key text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, position)
  )`
  yield* sql`CREATE INDEX tl_delivery_payloads_event ON tl_delivery_payloads (event_id)`

  // Append-only delivery log: every routing decision and every attempt with its outcome.
  yield* sql`CREATE TABLE tl_delivery_records (
    id bigserial PRIMARY KEY,
    destination text NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'dropped', 'retry', 'dead_letter')),
    reason text,
    status integer,
    response text,
    duration_ms integer,
    at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE INDEX tl_delivery_records_event ON tl_delivery_records (event_id)`
  yield* sql`CREATE INDEX tl_delivery_records_dest ON tl_delivery_records (destination, at)`

  // Events waiting for another attempt. `kind` says whether the destination refused this event ('event') or the
  // whole request failed ('request'); only the former counts towards maxAttempts.
  yield* sql`CREATE TABLE tl_retry_queue (
    destination text NOT NULL,
    position bigint NOT NULL,
    event_id text NOT NULL,
    attempts integer NOT NULL,
    kind text NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_reason text NOT NULL,
    PRIMARY KEY (destination, position)
  )`
  yield* sql`CREATE INDEX tl_retry_queue_due ON tl_retry_queue (destination, next_attempt_at)`

  // Business keys (e.g. a purchase's order_id): the first event that claimed each key. A later report of the same
  // key is stored with duplicate_of set, and is never delivered twice. A unique key, so safe under concurrency.
  yield* sql`CREATE TABLE tl_business_keys (
    business_key text PRIMARY KEY,
    event_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`
})

const m0002 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Consent updates are idempotent by their update id, like tracked events by event id.
  yield* sql`CREATE UNIQUE INDEX tl_log_consent_id ON tl_log (event_id) WHERE kind = 'consent'`
  // The identity graph (a projection of the log; rebuildable by replaying it).
  yield* sql`CREATE TABLE tl_people (
    person_id text PRIMARY KEY,
    user_id text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE TABLE tl_identifiers (
    key text PRIMARY KEY,
    kind text NOT NULL,
    users text[] NOT NULL DEFAULT '{}',
    person_id text,
    raw text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
  )`
  yield* sql`CREATE INDEX tl_identifiers_person ON tl_identifiers (person_id)`
  yield* sql`CREATE TABLE tl_identity_edges (a text NOT NULL, b text NOT NULL, PRIMARY KEY (a, b))`
  yield* sql`CREATE INDEX tl_identity_edges_b ON tl_identity_edges (b)`
  // Consent choices, keyed by the identifier they were made under (so they follow the person through merges).
  yield* sql`CREATE TABLE tl_consent_choices (
    id bigserial PRIMARY KEY,
    identifier text NOT NULL,
    purpose text NOT NULL,
    granted boolean NOT NULL,
    at timestamptz NOT NULL,
    source text NOT NULL,
    log_tx xid8 NOT NULL,
    log_position bigint NOT NULL
  )`
  yield* sql`CREATE INDEX tl_consent_choices_identifier ON tl_consent_choices (identifier)`
  // Durable traits (user_properties), latest value per identifier and key by event time.
  yield* sql`CREATE TABLE tl_traits (
    identifier text NOT NULL,
    key text NOT NULL,
    value jsonb NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (identifier, key)
  )`
})

const m0003 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // A later report of a business key with another amount is an adjustment of the first report.
  yield* sql`ALTER TABLE tl_log ADD COLUMN adjustment jsonb`
  yield* sql`ALTER TABLE tl_business_keys ADD COLUMN last_event_id text`
  yield* sql`ALTER TABLE tl_business_keys ADD COLUMN amount text`
})

const m0004 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Privacy (crypto-shredding, see Vault.ts): one data key per key ref (an identity-graph key), wrapped by the
  // master key. Erasure sets `wrapped` to NULL; the row stays as a tombstone so no new key is made for that ref.
  yield* sql`CREATE TABLE tl_person_keys (
    key_ref text PRIMARY KEY,
    wrapped bytea,
    master_key_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    shredded_at timestamptz,
    erasure_id text
  )`
  yield* sql`CREATE INDEX tl_person_keys_erasure ON tl_person_keys (erasure_id) WHERE erasure_id IS NOT NULL`
  // Startup checks that every stored key was wrapped by the configured master key (and a rotation would find them).
  yield* sql`CREATE INDEX tl_person_keys_master ON tl_person_keys (master_key_id)`
  // One row per erasure (`DELETE /v1/people/:id`); the log holds a matching `erasure` event.
  yield* sql`CREATE TABLE tl_erasures (
    erasure_id text PRIMARY KEY,
    person_id text NOT NULL,
    user_id text,
    requester text NOT NULL,
    keys_destroyed integer NOT NULL,
    identifiers_erased integer NOT NULL,
    pending_removed integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE INDEX tl_erasures_person ON tl_erasures (person_id)`
  // What each destination answered when the erasure was forwarded to it (append-only, like delivery records).
  yield* sql`CREATE TABLE tl_erasure_forwards (
    id bigserial PRIMARY KEY,
    erasure_id text NOT NULL,
    destination text NOT NULL,
    plugin text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'not_configured', 'not_supported', 'failed')),
    detail text NOT NULL,
    status integer,
    response text,
    at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE INDEX tl_erasure_forwards_erasure ON tl_erasure_forwards (erasure_id)`
})

const m0005 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Audience events (kind 'audience', one per member of an inbound cohort batch) are idempotent by their id
  // (`<message id>:<user id>`), so a retried webhook is stored once.
  yield* sql`CREATE UNIQUE INDEX tl_log_audience_id ON tl_log (event_id) WHERE kind = 'audience'`
  // Audience membership (a projection of the audience events): latest by the source's computed time.
  yield* sql`CREATE TABLE tl_audience_members (
    audience_key text NOT NULL,
    identifier text NOT NULL,
    audience_name text NOT NULL,
    member boolean NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (audience_key, identifier)
  )`
  yield* sql`CREATE INDEX tl_audience_members_identifier ON tl_audience_members (identifier)`
  // What each destination was last told about each member (written when the destination accepted it), so a
  // retried webhook, a replay or a consent change sends only the adds and removes that change something.
  yield* sql`CREATE TABLE tl_audience_sync (
    destination text NOT NULL,
    audience_key text NOT NULL,
    identifier text NOT NULL,
    member boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, audience_key, identifier)
  )`
  // The trait values last synced to a destination's user-state capability (Amplitude Identify), per person.
  yield* sql`CREATE TABLE tl_trait_sync (
    destination text NOT NULL,
    identifier text NOT NULL,
    traits jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, identifier)
  )`
})

const m0006 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Replays (`tracklayer replay`, `POST /v1/destinations/:id/replays`): history re-delivered to one destination
  // through the live path, resumable from its own cursor; `end` is where live delivery stood when it was created.
  yield* sql`CREATE TABLE tl_replays (
    replay_id text PRIMARY KEY,
    destination text NOT NULL,
    since timestamptz,
    until timestamptz,
    events text[],
    dry_run boolean NOT NULL DEFAULT false,
    state text NOT NULL CHECK (state IN ('running', 'paused', 'done', 'failed')),
    cursor_tx xid8 NOT NULL,
    cursor_pos bigint NOT NULL,
    end_tx xid8 NOT NULL,
    end_pos bigint NOT NULL,
    total bigint NOT NULL,
    counts jsonb NOT NULL DEFAULT '{}',
    samples jsonb NOT NULL DEFAULT '[]',
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`
  yield* sql`CREATE INDEX tl_replays_destination ON tl_replays (destination, state)`
})

const m0007 = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Leases (Lease.ts): background work (projector, each destination's delivery, trait sync) runs in one process at a
  // time; a dead process's lease expires and another takes the work over.
  yield* sql`CREATE TABLE tl_leases (
    name text PRIMARY KEY,
    owner text NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
  )`
  // Which process wrote each delivery record (scale-out: shows who delivered what, and that none overlapped).
  yield* sql`ALTER TABLE tl_delivery_records ADD COLUMN owner text`
  // The delivery-log explorer searches by person, business key and time, and reconciles per destination.
  yield* sql`CREATE INDEX tl_log_person ON tl_log (person_key)`
  yield* sql`CREATE INDEX tl_log_dedup ON tl_log (dedup_key)`
  yield* sql`CREATE INDEX tl_log_occurred ON tl_log (occurred_at) WHERE kind = 'track'`
  yield* sql`CREATE INDEX tl_delivery_records_position ON tl_delivery_records (destination, position, id)`
})

/** Migration id_name → effect, in order. */
export const migrations = {
  "0001_event_log": m0001,
  "0002_identity_consent": m0002,
  "0003_adjustments": m0003,
  "0004_privacy": m0004,
  "0005_audiences": m0005,
  "0006_replays": m0006,
  "0007_leases": m0007
}
