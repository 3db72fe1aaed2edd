package control

// ActionEventDeadLettered is the audit action recorded when one of the kernel's consumers gives up
// on an event and moves it to the dead-letter queue (with the event id, type, dead letter id and
// attempts in the reason), in the tenant's tree.
const ActionEventDeadLettered = "events.dead_lettered"
