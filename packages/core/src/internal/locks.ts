/**
 * Advisory lock keys. MIGRATION_LOCK serialises the creation of the migrations table by processes starting at once
 * (Database.ts). Delivery takes ERASURE_LOCK shared around each write of records and retries; an erasure
 * takes it exclusively, so a delivery step that began before an erasure cannot re-queue a retry after it.
 */
export const ERASURE_LOCK = 7_462_001
export const MIGRATION_LOCK = 7_462_002
