<?php
// What `require 'vendor/autoload.php'` gives a Composer project, for tests/test_php.py:
// firebase/php-jwt v7.0.5 (BSD-3-Clause, vendor/firebase/php-jwt/LICENSE; the files of its
// src/ needed to sign, copied unchanged from github.com/firebase/php-jwt at tag v7.0.5),
// vendored because Debian does not package it and no Composer repository is reachable here;
// and Debian's php-amqplib (apt-get install -y php-amqplib).
spl_autoload_register(function (string $class): void {
    $prefix = 'Firebase\\JWT\\';
    if (strncmp($class, $prefix, strlen($prefix)) === 0) {
        $file = __DIR__ . '/vendor/firebase/php-jwt/src/' . substr($class, strlen($prefix)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
if (is_file('/usr/share/php/PhpAmqpLib/autoload.php')) {
    require '/usr/share/php/PhpAmqpLib/autoload.php';
}
