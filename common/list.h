/* list: an intrusive circular doubly-linked list. Header-only.
 *
 * A struct that can sit on a list embeds a `struct list_node`; the list
 * itself is a `struct list_node` head. Insert and delete are O(1) and never
 * allocate. A node that was list_init'ed or removed with list_del points
 * at itself, so list_linked() tells whether it is on a list and deleting it
 * twice is harmless. */
#ifndef CORE_LIST_H
#define CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
    struct list_node *next, *prev;
};

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define LIST_HEAD_INIT(name)                                                                                           \
    {                                                                                                                  \
        &(name), &(name)                                                                                               \
    }

static inline void list_init(struct list_node *l) { l->next = l->prev = l; }
static inline bool list_empty(const struct list_node *l) { return l->next == l; }
static inline bool list_linked(const struct list_node *n) { return n->next != n; }

static inline void list_insert_after(struct list_node *pos, struct list_node *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}
static inline void list_add_tail(struct list_node *l, struct list_node *n) { list_insert_after(l->prev, n); }
static inline void list_add_head(struct list_node *l, struct list_node *n) { list_insert_after(l, n); }
static inline void list_del(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}
/* First node or NULL. */
static inline struct list_node *list_first(const struct list_node *l) { return l->next == l ? NULL : l->next; }
static inline struct list_node *list_last(const struct list_node *l) { return l->prev == l ? NULL : l->prev; }
/* Remove and return the first node, or NULL. */
static inline struct list_node *list_pop(struct list_node *l)
{
    struct list_node *n = list_first(l);
    if (n)
        list_del(n);
    return n;
}
/* Move every node of src to the tail of dst; src ends empty. */
static inline void list_splice_tail(struct list_node *dst, struct list_node *src)
{
    if (list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    list_init(src);
}

#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
/* Safe against deleting pos inside the body. */
#define list_for_each_safe(pos, tmp, head)                                                                             \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
