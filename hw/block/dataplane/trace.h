#include "trace/trace-hw_block_dataplane.h"
