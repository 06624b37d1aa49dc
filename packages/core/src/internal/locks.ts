/**
 * Advisory lock keys. Delivery takes ERASURE_LOCK shared around each write of records and retries; an erasure
 * takes it exclusively, so a delivery step that began before an erasure cannot re-queue a retry after it.
 */
export const ERASURE_LOCK = 7_462_001
